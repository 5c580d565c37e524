"""With other tools: samples as datasets and in the official SSD pipeline's formats (out, and back in for
training), the model card, experiment tracking (tensorboard, offline), and uploads to the Hub up to the
network call (the real client, pointed at a closed local port)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import REPLY, tiny_cfg, write_samples
from typer.testing import CliRunner

from selfdistill.cli import app
from selfdistill.config import TrainConfig
from selfdistill.manifest import load_manifest
from selfdistill.train import TrainError, prepare, train


@pytest.fixture(scope="module")
def samples(tmp_path_factory, tiny_model) -> Path:
    return write_samples(
        tmp_path_factory.mktemp("samples") / "s",
        tiny_model,
        [REPLY, "```python\nprint(1)\n```", REPLY, "x\ny"],
        finish=["stop", "stop", "length", "stop"],
    )


def ssd(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def examples(cfg: TrainConfig) -> list[tuple]:
    return [(tuple(e["input_ids"]), tuple(e["completion_mask"])) for e in prepare(cfg).examples]


# ---------------------------------------------------------------- samples as datasets


def test_a_samples_directory_loads_with_load_dataset(samples):
    from datasets import load_dataset

    rows = load_dataset("json", data_files=f"{samples}/shards/*.jsonl", split="train")
    assert rows.num_rows == 4 and rows[0]["messages"][1]["role"] == "user" and rows[2]["finish_reason"] == "length"


def test_exports_are_the_official_formats_and_train_to_the_same_examples(samples, tmp_path):
    from datasets import load_dataset

    ssd("samples", "export", samples, "--format", "messages", "--out", tmp_path / "train.jsonl")
    ssd("samples", "export", samples, "--format", "parquet")
    messages = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert [m["role"] for m in messages[0]["messages"]] == ["system", "user", "assistant"] and messages[0]["messages"][
        -1
    ]["content"] == REPLY
    parquet = load_dataset("parquet", data_files=str(samples / "export" / "train.parquet"), split="train")
    assert (
        parquet.num_rows == 4
        and parquet[1]["output"] == "```python\nprint(1)\n```"
        and parquet[1]["prompt"].startswith("Problem 1")
    )
    ours = examples(tiny_cfg(samples, tmp_path / "t"))
    assert (
        examples(tiny_cfg(samples / "export" / "train.parquet", tmp_path / "t")) == ours
    )  # token ids and finish reasons kept
    # messages carry text only: every reply is taken as finished, so the one cut by max_tokens gains an end of turn
    from_messages = examples(tiny_cfg(tmp_path / "train.jsonl", tmp_path / "t"))
    assert [e for i, e in enumerate(from_messages) if i != 2] == [e for i, e in enumerate(ours) if i != 2]
    assert from_messages[2][0][: len(ours[2][0])] == ours[2][0] and len(from_messages[2][0]) > len(ours[2][0])


def test_samples_made_elsewhere_train_with_unknown_provenance_and_a_checked_template(
    tmp_path, tiny_model, harmony_tokenizer
):
    official = tmp_path / "official.jsonl"
    official.write_text(
        "".join(
            json.dumps(
                {"messages": [{"role": "user", "content": f"Problem {i}"}, {"role": "assistant", "content": REPLY}]}
            )
            + "\n"
            for i in range(3)
        )
    )
    prep = prepare(tiny_cfg(official, tmp_path / "t"))
    assert len(prep.examples) == 3 and prep.samples_manifest["provenance"] == "unknown"
    assert sum(prep.examples[0]["completion_mask"]) > 0
    # a row that records the prompt it was sampled with must render to it with the model's template
    other = write_samples(
        tmp_path / "harmony-samples", tiny_model, [REPLY], template_from=str(tmp_path / "harmony-tokenizer")
    )
    ssd("samples", "export", other, "--format", "messages")
    with pytest.raises(TrainError, match="prompt_text differs from its messages rendered with the chat template"):
        prepare(tiny_cfg(other / "export" / "train.jsonl", tmp_path / "t"))
    (tmp_path / "bad.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(TrainError, match=r"bad.jsonl:1: expected field 'messages' ending with the assistant's reply"):
        prepare(tiny_cfg(tmp_path / "bad.jsonl", tmp_path / "t"))


# ---------------------------------------------------------------- the Hub, up to the network call


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: nothing listens there


def ssd_process(tmp_path, env: dict, *args) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return subprocess.run(
        [sys.executable, "-m", "selfdistill", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**base, "HF_HOME": str(tmp_path / "hf-home"), **env},
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HF_TOKEN": "hf_not_a_real_token", "HF_ENDPOINT": "ENDPOINT"}, "at ENDPOINT failed: ConnectError"),
        ({"HF_ENDPOINT": "ENDPOINT"}, "no Hugging Face token: run `hf auth login` or set HF_TOKEN"),
        ({"HF_TOKEN": "hf_not_a_real_token", "HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
    ],
)
def test_push_fails_with_one_line_offline_without_a_token_or_a_reachable_hub(
    tmp_path, samples, tiny_model, env, message
):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    env = {k: v.replace("ENDPOINT", endpoint) for k, v in env.items()}
    for args in (
        ["models", "push", tiny_model, "me/tiny-ssd", "--private"],
        ["samples", "push", samples, "me/tiny-samples"],
    ):
        result = ssd_process(tmp_path, env, *args)
        output = " ".join(result.stderr.split())
        assert result.returncode == 1 and "Traceback" not in output, result.stderr
        assert output.count("error:") == 1 and message.replace("ENDPOINT", endpoint) in output, output


# ---------------------------------------------------------------- a trained model: card and tracking


@pytest.fixture(scope="module")
def trained(tmp_path_factory, samples) -> Path:
    out = tmp_path_factory.mktemp("train") / "tracked"
    train(tiny_cfg(samples, out, report_to=["tensorboard"]))
    return out


@pytest.mark.integration
def test_report_to_tensorboard_writes_the_loss_and_stays_out_of_the_fingerprint(trained, samples):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run,) = (trained / "checkpoints" / "runs").iterdir()
    events = EventAccumulator(str(run))
    events.Reload()
    assert len(events.Scalars("train/loss")) == 4 and len(events.Scalars("train/learning_rate")) == 4
    manifest = load_manifest(trained)
    assert "report_to" not in manifest["fingerprint"]["config"]  # a tracker never changes the model
    assert train(TrainConfig(**{**manifest["config"], "report_to": []})) == trained / "model"  # same stage: reused


@pytest.mark.integration
def test_model_card_states_base_method_sampling_recipe_and_data_then_results(trained, samples, tmp_path):
    from huggingface_hub import ModelCard

    from selfdistill.hub import write_model_card
    from selfdistill.results import compare, load_summary

    card = ModelCard.load(trained / "model" / "README.md")
    manifest = load_manifest(trained)
    assert card.data.library_name == "transformers" and "selfdistill" in card.data.tags
    for fact in (
        "arXiv 2604.01193",
        "| T_train | 1.6 |",
        "| top-k | 20 |",
        "| top-p | 0.8 |",
        "| N (samples per prompt) | 1 |",
        manifest["inputs"]["samples_data"],
        manifest["inputs"]["chat_template_sha256"],
        "| optimizer steps | 4 |",
        "| objective | SFT on the raw samples |",
        "Not evaluated yet",
    ):
        assert fact in card.text, fact
    # results: two real evals of replies (a "base" that fails one problem, an "SSD" that passes both), as `ssd report`
    # passes them
    import gzip

    from selfdistill import benchmarks

    with gzip.open(benchmarks.get("humaneval").source(), "rt") as f:
        rows = [json.loads(line) for line in f]
    evals = {}
    for name, good in (("base", 60), ("ssd", 100)):
        replies = tmp_path / f"{name}.jsonl"
        replies.write_text(
            "".join(
                json.dumps(
                    {
                        "problem_id": r["task_id"],
                        "temperature": 0,
                        "reply": f"```python\n{r['prompt'] + r['canonical_solution'] if i < good else 'x = 1'}\n```",
                    }
                )
                + "\n"
                for i, r in enumerate(rows)
            )
        )
        ssd(
            "eval", "--benchmark", "humaneval", "--replies", replies, "--output-dir", tmp_path / name, "--workers", "4"
        )
        evals[name] = load_summary(tmp_path / name)
    write_model_card(trained, {**evals, "compare": compare(tmp_path / "base", tmp_path / "ssd")})
    card = ModelCard.load(trained / "model" / "README.md")
    assert "Not evaluated yet" not in card.text and "| pass@1 |" in card.text and "humaneval" in card.text
    (result,) = card.data.eval_results
    assert result.metric_type == "pass@1" and result.metric_value == round(100 * evals["ssd"].chosen(1).test_score, 2)
