"""`ssd analyze` on tiny-random against a perturbed copy of itself, over a hand-written eval dir in the
documented results schema, plus the statistics on fixed logits where the right answer is known."""

import json
import math
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from selfdistill import results as R
from selfdistill.analyze import (
    FORK_MIN_SURVIVORS,
    RANKS,
    AnalyzeError,
    analyze,
    fork_difference_table,
    load_replies,
    position_stats,
    summarize,
    truncated_stats,
    with_truncations,
)
from selfdistill.config import AnalyzeConfig

REPLIES = [
    ("HumanEval/0", "```python\ndef add(a, b):\n    return a + b\n```"),
    (
        "HumanEval/1",
        "Here is a solution.\n\n```python\ndef fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, "
        "b = b, a + b\n    return a\n```",
    ),
    ("HumanEval/2", "```python\ndef is_even(x):\n    return x % 2 == 0\n```\nThis checks the remainder."),
]
T_EVALS = [1e-4, 0.5, 1.0, 1.6]
TRAIN_TRUNCATION = {
    "t_train": 1.6,
    "top_k": 20,
    "top_p": 0.8,
}  # the perturbed model has no `ssd train` dir to read it from


@pytest.fixture(scope="module")
def perturbed_model(tiny_model, tmp_path_factory) -> str:
    """tiny-random with noise on every weight: a second model with the same vocabulary."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("perturbed")
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.5 * p.float().std().nan_to_num(0.02).clamp(min=0.02))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return str(out)


def write_summary(eval_dir, decoding: R.Decoding | None) -> None:
    """A summary.json of results.EvalSummary holding what analyze reads (its temperature 0.7 and decoding);
    its scores are empty."""
    entry = R.TemperatureEntry(0.7, 1, False, None, [1], {}, {}, 0.0, 0.0, None)
    R.write_summary(
        eval_dir,
        R.EvalSummary(
            benchmark="humaneval",
            label="all tests",
            grading="evalplus",
            grading_rules=None,
            model="m",
            prompt_format="chat",
            decoding=decoding,
            n_problems=0,
            ks=[1],
            t_eval=None,
            dev_fraction=0.5,
            seed=0,
            protocol=R.Protocol.GRID,
            problem_ids=[],
            dev_ids=[],
            test_ids=[],
            temperatures={"0.70": entry},
            selection={},
        ),
    )


def write_eval_dir(path, tiny_model, rows=REPLIES, prompt_text=True):
    """A finished eval output dir in the schema evaluate.py documents: manifest.json, results/T*.jsonl and
    summary.json (write_summary)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    (path / "results").mkdir(parents=True)
    (path / "manifest.json").write_text(
        json.dumps({"stage": "eval", "config": {"model": tiny_model, "benchmark": "humaneval"}})
    )
    write_summary(path, R.Decoding(top_k=20, top_p=0.8, min_p=0.0, max_tokens=64))
    with open(path / "results" / "T0.70.jsonl", "w") as f:
        for i, (pid, reply) in enumerate(rows):
            rec = {
                "problem_id": pid,
                "temperature": 0.7,
                "sample_index": 0,
                "seed": i,
                "status": "passed",
                "passed": True,
                "detail": "",
                "reply": reply,
                "reply_tokens": len(tok(reply).input_ids),
                "finish_reason": "stop",
            }
            if prompt_text:
                rec["prompt_text"] = tok.apply_chat_template(
                    [{"role": "user", "content": f"Solve {pid}."}], add_generation_prompt=True, tokenize=False
                )
            f.write(json.dumps(rec) + "\n")
    return path


@pytest.fixture(scope="module")
def analysis(tiny_model, perturbed_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    replies = write_eval_dir(root / "eval", tiny_model)
    cfg = AnalyzeConfig(
        base_model=tiny_model,
        ssd_model=perturbed_model,
        replies=str(replies),
        limit=8,
        t_evals=T_EVALS,
        output_dir=str(root / "out"),
        **TRAIN_TRUNCATION,
    )
    out = analyze(cfg)
    return cfg, out, json.loads((out / "analysis.json").read_text())


def test_outputs_and_shapes(analysis):
    _cfg, out, a = analysis
    for name in (
        "fig6a_cumulative_mass.png",
        "fig6b_survivors.png",
        "fig6c_entropy.png",
        "fig6d_entropy_by_top20.png",
    ):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["finished_at"]
        and manifest["models"]["base"] in manifest["inputs"]
        and manifest["models"]["ssd"] in manifest["inputs"]
    )
    assert a["n_replies"] == len(REPLIES) and a["units"]["entropy"] == "nats"
    n = a["n_positions"]
    assert n == sum(r["reply_tokens"] for r in a["replies"]) > 0
    for name in ("base", "ssd"):
        pos = np.load(out / f"positions_{name}.npz")
        assert pos["cum_mass"].shape == (n, RANKS) and pos["eval_entropy"].shape == (n, len(T_EVALS))
        assert len(a["cumulative_mass"][name]) == RANKS and len(a["entropy"][name]["all"]) == len(T_EVALS)
        assert (
            len(a["top20_bins"]["entropy"][name])
            == len(a["top20_bins"]["tail_edges"]) - 1
            == len(a["top20_bins"]["count"])
        )


def test_curves_make_sense(analysis):
    cfg, out, a = analysis
    for name in ("base", "ssd"):
        cum = np.array(a["cumulative_mass"][name])
        assert np.all(np.diff(cum) >= -1e-6) and cum[0] > 0 and cum[-1] <= 1 + 1e-5  # (a) is monotone
        pos = np.load(out / f"positions_{name}.npz")
        assert np.all(np.diff(pos["cum_mass"], axis=1) >= -1e-6)
        surv, ent = pos["eval_survivors"], pos["eval_entropy"]
        assert np.all(surv[:, 0] == 1)  # T -> 0: only the argmax survives
        top_k = a["eval_truncation"]["top_k"]  # the eval's, from its summary
        assert np.all(surv >= 1) and np.all(surv <= top_k)
        assert np.all(ent >= -1e-6) and np.all(ent <= np.log(surv) + 1e-4) and np.all(ent <= math.log(top_k) + 1e-4)
        assert np.all(np.diff(a["survivors"][name]["all"]) >= 0)  # hotter keeps more tokens


def test_fork_lock_counts_add_up(analysis):
    _cfg, out, a = analysis
    n = a["n_positions"]
    for name in ("base", "ssd"):
        c = a["counts"][name]
        assert c["fork"] + c["lock"] == n
        pos = np.load(out / f"positions_{name}.npz")
        assert c["fork"] == int((pos["train_survivors"] >= FORK_MIN_SURVIVORS).sum())
    assert sum(a["transitions"].values()) == n
    assert sum(a["top20_bins"]["count"]) == n
    for row in a["lock_fork"]:
        assert row["n_lock"] + row["n_fork"] == n


def test_rerun_reuses_finished_models(analysis):
    cfg, out, a = analysis
    stamp = {name: os.stat(out / f"positions_{name}.npz").st_mtime_ns for name in ("base", "ssd")}
    (out / "positions_ssd.npz").unlink()  # as if killed while scoring the SSD model
    analyze(cfg)
    assert os.stat(out / "positions_base.npz").st_mtime_ns == stamp["base"]
    assert json.loads((out / "analysis.json").read_text())["cumulative_mass"] == a["cumulative_mass"]


def test_scoring_resumes_after_the_saved_replies(tiny_model, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from selfdistill import analyze as mod

    replies, _ = load_replies(write_eval_dir(tmp_path / "eval", tiny_model), 8, 0)
    sequences = mod.tokenize(AutoTokenizer.from_pretrained(tiny_model), replies)
    cfg = AnalyzeConfig(t_evals=[0.5, 1.0], eval_top_k=20, eval_top_p=0.8, **TRAIN_TRUNCATION)
    model = mod.load_model(tiny_model)

    def stats(logits, _first):
        return position_stats(logits, cfg)

    whole = mod.score(model, "base", sequences, stats, tmp_path / "whole.npz")
    first = whole["reply"] == 0
    mod._save_npz(tmp_path / "resumed.partial.npz", {k: v[first] for k, v in whole.items()})  # killed after reply 0
    monkeypatch.setattr(mod, "SAVE_EVERY", 0.0)  # and save after every reply this time
    resumed = mod.score(model, "base", sequences, stats, tmp_path / "resumed.npz")
    assert whole.keys() == resumed.keys() and all(np.array_equal(whole[k], resumed[k]) for k in whole)
    assert not (tmp_path / "resumed.partial.npz").exists() and (tmp_path / "resumed.npz").is_file()


@torch.inference_mode()
def test_reply_logits_in_chunks_are_the_models_logits(tiny_model):
    """The decoder once, the LM head per chunk of positions: the same logits as the model's own forward
    pass, for every reply position, whatever the chunk size."""
    from selfdistill.analyze import load_model, reply_logits

    model = load_model(tiny_model)
    prompt, reply = [5, 17, 3, 99], [12, 7, 7, 40, 2, 31, 8]
    full = model(input_ids=torch.tensor([prompt + reply])).logits[0, len(prompt) - 1 : -1]
    for chunk in (1, 3, 512):
        parts = list(reply_logits(model, prompt, reply, chunk))
        assert [len(p) for p in parts] == [min(chunk, len(reply) - i) for i in range(0, len(reply), chunk)]
        assert torch.allclose(torch.cat(parts), full, atol=1e-5)


def test_same_model_changes_nothing(tiny_model, tmp_path):
    replies = write_eval_dir(tmp_path / "eval", tiny_model, REPLIES[:1])
    out = analyze(
        AnalyzeConfig(
            base_model=tiny_model,
            ssd_model=tiny_model,
            replies=str(replies),
            t_evals=[0.5, 1.0],
            output_dir=str(tmp_path / "out"),
            **TRAIN_TRUNCATION,
        )
    )
    a = json.loads((out / "analysis.json").read_text())
    assert a["cumulative_mass"]["base"] == a["cumulative_mass"]["ssd"] and a["entropy"]["base"] == a["entropy"]["ssd"]
    assert a["transitions"]["base fork -> ssd lock"] == a["transitions"]["base lock -> ssd fork"] == 0
    for row in a["paired_entropy"]:  # one model: every classification is the same, and so are both entropies
        assert row["base"] == row["ssd"] == row["both"] and row["both"]["fork"]["ssd_minus_base"]["mean"] == 0


def test_position_stats_on_known_logits():
    # Row 0: one dominant token (a lock); row 1: three equal tokens far above the rest (a fork).
    logits = -20.0 - torch.arange(1000.0).repeat(2, 1) / 1000  # a distinct, negligible tail
    logits[0, 7] = 10.0
    logits[1, :3] = 10.0
    cfg = AnalyzeConfig(t_train=1.0, top_k=20, top_p=0.95, t_evals=[1e-3, 1.0], eval_top_k=20, eval_top_p=1.0)
    s = position_stats(logits, cfg)
    assert s["train_survivors"].tolist() == [1, 3]
    assert s["eval_survivors"][:, 0].tolist() == [1, 3]  # T -> 0: only the top token survives, or exact ties
    assert s["eval_survivors"][:, 1].tolist() == [20, 20]  # top-k 20, no top-p: all 20 survive, if barely
    assert s["train_entropy"][0] == pytest.approx(0.0, abs=1e-6) and s["train_entropy"][1] == pytest.approx(
        math.log(3), abs=1e-4
    )
    assert s["cum_mass"][1, 2] == pytest.approx(1.0, abs=1e-6) and s["top20_tail"][0] == pytest.approx(
        torch.softmax(logits[0].double(), -1).sort().values[:-20].sum().item(), rel=1e-4
    )


@pytest.mark.parametrize("ties", [False, True])
def test_top_k_shortcut_matches_full_vocabulary(ties):
    """position_stats truncates only the largest logits; the reference truncates the whole vocabulary."""
    logits = torch.randn(64, 5000, generator=torch.Generator().manual_seed(0)) * 3
    if ties:  # a run of ties with the 20th token that goes past the shortcut's slice
        logits[:, 150:] -= 20.0
        logits[:, 1:150] = 0.0
        logits[:, 0] = 3.0
    cfg = AnalyzeConfig(t_train=1.6, top_k=20, top_p=0.8, t_evals=[0.3, 1.0], eval_top_k=20, eval_top_p=1.0)
    s = position_stats(logits, cfg)
    assert (s["eval_survivors"][:, 1].max() > RANKS) == ties  # vLLM's top-k keeps ties with the k-th token
    for j, t in enumerate(cfg.t_evals):
        survivors, entropy = truncated_stats(logits, t, cfg.eval_top_k, cfg.eval_top_p)
        assert np.array_equal(s["eval_survivors"][:, j], survivors.numpy())
        assert np.allclose(s["eval_entropy"][:, j], entropy.numpy(), atol=1e-5)
    assert np.array_equal(s["train_survivors"], truncated_stats(logits, 1.6, 20, 0.8)[0].numpy())


def test_bad_records_name_file_and_line(tiny_model, tmp_path):
    eval_dir = write_eval_dir(tmp_path / "eval", tiny_model)
    results = eval_dir / "results" / "T0.70.jsonl"
    lines = results.read_text().splitlines()
    del_reply = json.loads(lines[1])
    del del_reply["reply"]
    results.write_text("\n".join([lines[0], json.dumps(del_reply), lines[2]]) + "\n")
    with pytest.raises(AnalyzeError, match=r"T0\.70\.jsonl:2: missing field 'reply'"):
        load_replies(eval_dir, 8, 0)
    with pytest.raises(AnalyzeError, match="neither an eval output dir"):
        load_replies(tmp_path, 8, 0)


def test_samples_dir_replies(tiny_model, tmp_path):
    """A samples dir as sample.py writes it: only kept samples are scored."""
    from selfdistill.config import SampleConfig
    from selfdistill.manifest import RunDir

    run = RunDir.open(tmp_path / "samples", "sample", SampleConfig(model=tiny_model), {})
    (run.path / "shards").mkdir()
    records = [
        {
            "prompt_id": pid,
            "sample_index": 0,
            "seed": 0,
            "messages": [],
            "prompt_text": f"<prompt {pid}>",
            "reply": reply,
            "reply_token_ids": [],
            "prompt_tokens": 3,
            "reply_tokens": 9,
            "finish_reason": "stop",
            "flags": flags,
            "keep": not flags,
        }
        for pid, reply, flags in (
            ("p1", "def f():\n    return 1", []),
            ("p2", "x", ["stub"]),
            ("p3", "def g():\n    return 2", []),
        )
    ]
    (run.path / "shards" / "shard-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    run.finish(counts={"samples": 3})
    replies, files = load_replies(run.path, 8, 0)
    assert sorted(r["id"] for r in replies) == ["p1", "p3"] and files == [run.path / "shards" / "shard-00000.jsonl"]


def test_one_reply_per_problem_seeded(tiny_model, tmp_path):
    rows = [(pid, f"reply {j} to {pid}") for pid in ("a", "b", "c", "d") for j in range(3)]
    eval_dir = write_eval_dir(tmp_path / "eval", tiny_model, rows)
    first, _ = load_replies(eval_dir, 3, seed=1)
    again, _ = load_replies(eval_dir, 3, seed=1)
    assert first == again and len({r["id"] for r in first}) == 3


# ---------------------------------------------------------------- truncations from the stages, without models


def finished_stage(path, stage_cfg, **items):
    from selfdistill.manifest import RunDir
    from selfdistill.stages import stage_of

    RunDir.open(path, stage_of(stage_cfg).name, stage_cfg).finish(**items)
    return path


def test_truncations_are_those_the_samples_and_the_replies_were_drawn_with(tmp_path):
    from selfdistill.config import EvalConfig, SampleConfig, TrainConfig

    samples = finished_stage(tmp_path / "samples", SampleConfig(temperature=1.2, top_k=0, top_p=1.0))
    train = finished_stage(
        tmp_path / "train", TrainConfig(samples=str(samples)), model_dir=str(tmp_path / "train" / "model")
    )
    replies = finished_stage(tmp_path / "eval", EvalConfig(top_k=20, top_p=0.95))
    write_summary(replies, R.Decoding(top_k=20, top_p=0.95, min_p=0.0, max_tokens=1024))
    cfg = AnalyzeConfig(ssd_model=str(train / "model"), replies=str(replies))
    resolved = with_truncations(cfg)
    assert (resolved.t_train, resolved.top_k, resolved.top_p, resolved.eval_top_k, resolved.eval_top_p) == (
        1.2,
        0,
        1.0,
        20,
        0.95,
    )
    assert with_truncations(replace(cfg, top_p=0.9, eval_top_k=5)) == replace(
        resolved, top_p=0.9, eval_top_k=5
    )  # given ones win
    on_samples = with_truncations(replace(cfg, replies=str(samples)))  # replies drawn at the training truncation
    assert (on_samples.eval_top_k, on_samples.eval_top_p) == (0, 1.0)
    with pytest.raises(AnalyzeError, match="not the model of an `ssd train` directory: give t_train, top_k and top_p"):
        with_truncations(replace(cfg, ssd_model="qwen2.5-coder-0.5b-instruct"))
    write_summary(replies, None)  # replies graded from a file
    with pytest.raises(AnalyzeError, match="give eval_top_k and eval_top_p"):
        with_truncations(cfg)


@pytest.mark.parametrize("preset", ["gpt-oss-20b", "qwen3-4b-thinking-2507", "qwen2.5-coder-0.5b-instruct"])
def test_analyze_alone_classifies_at_the_truncation_ssd_run_gives_it(tmp_path, preset):
    """`ssd analyze --preset P` on a run's stage directories reads the truncations `ssd run` derives (GPT-OSS
    samples untruncated and is evaluated at top-p 0.95: no default of the analysis may stand in)."""
    from selfdistill import config as C
    from selfdistill.pipeline import Stages

    stages = Stages.of(C.load_run_config(preset, overrides=[f"output_dir={tmp_path}"]))
    model_dir = stages.dirs["train"] / "model"
    finished_stage(stages.dirs["samples"], stages.sample())
    finished_stage(stages.dirs["train"], stages.train(), model_dir=str(model_dir))
    base = stages.eval_base()
    write_summary(
        finished_stage(stages.dirs["eval-base"], base), R.Decoding(base.top_k, base.top_p, base.min_p, base.max_tokens)
    )
    alone = C.load_stage_config(
        AnalyzeConfig, preset, overrides=[f"ssd_model={model_dir}", f"replies={stages.dirs['eval-base']}"]
    )
    assert alone.t_train is alone.top_k is alone.top_p is alone.eval_top_k is alone.eval_top_p is None
    derived = stages.analyze(model_dir)
    assert with_truncations(alone) == replace(derived, output_dir=alone.output_dir)
    assert (derived.t_train, derived.top_k, derived.top_p) == tuple(
        getattr(stages.cfg.sample, k) for k in ("temperature", "top_k", "top_p")
    )


# ------------------------------------------------------------- fork classifications, on per-position arrays (no model)


def synthetic_positions(replies: list[list[tuple[int, int, float, float]]]) -> dict[str, dict[str, np.ndarray]]:
    """positions_*.npz contents for (base survivors, SSD survivors, base entropy, SSD entropy) per position
    of each reply, one T_eval; the statistics summarize does not classify by are filler."""
    rows = [(i, *p) for i, reply in enumerate(replies) for p in reply]
    reply = np.array([r[0] for r in rows], dtype=np.int32)
    n = len(rows)

    def model(survivors: int, entropy: int) -> dict[str, np.ndarray]:
        return {
            "reply": reply,
            "token": np.arange(n),
            "top20_tail": np.linspace(1e-6, 1e-2, n),
            "cum_mass": np.full((n, RANKS), 1.0),
            "train_survivors": np.array([r[survivors] for r in rows]),
            "train_entropy": np.zeros(n),
            "eval_survivors": np.array([[r[survivors]] for r in rows]),
            "eval_entropy": np.array([[r[entropy]] for r in rows]),
        }

    return {"base": model(1, 3), "ssd": model(2, 4)}


SYNTHETIC_CFG = AnalyzeConfig(t_train=1.0, top_k=20, top_p=0.8, t_evals=[1.0], eval_top_k=20, eval_top_p=0.8)


def test_base_classified_forks_show_a_sharpening_the_symmetric_rule_removes():
    """Two exchangeable models: at A the base model happened to spread (4 survivors, 1.0 nats) and SSD did
    not (1, 0.2), at B the reverse, at C1 and C2 both are forks and differ by +-0.2. Nothing changed on
    average, yet the base model's forks {A, C1, C2} show SSD sharper by 0.8 / 3 and SSD's forks {B, C1, C2}
    flatter by as much; forks of both models {C1, C2} show no difference."""
    reply = [(4, 1, 1.0, 0.2), (1, 4, 0.2, 1.0), (4, 4, 0.9, 0.7), (4, 4, 0.7, 0.9)]  # A, B, C1, C2
    a = summarize(synthetic_positions([reply] * 5), SYNTHETIC_CFG)
    (row,) = a["paired_entropy"]
    expected = {
        "base": (3, 2.6 / 3, 1.8 / 3, -0.8 / 3),
        "ssd": (3, 1.8 / 3, 2.6 / 3, 0.8 / 3),
        "both": (2, 0.8, 0.8, 0.0),
    }
    for rule, (forks, base, ssd, diff) in expected.items():
        fork = row[rule]["fork"]
        assert (row[rule]["n_fork"], row[rule]["n_lock"]) == (5 * forks, 5 * (4 - forks))
        assert fork["base"]["mean"] == pytest.approx(base) and fork["ssd"]["mean"] == pytest.approx(ssd)
        # every reply is the same, so every resample of replies has the same mean: a CI of width 0
        assert fork["ssd_minus_base"] == pytest.approx({"mean": diff, "lo": diff, "hi": diff})
    assert row["both"]["lock"]["ssd_minus_base"]["mean"] == pytest.approx(0.0)  # A and B: -0.8 and +0.8
    assert a["lock_fork"][0]["ssd_fork_entropy"] - a["lock_fork"][0]["base_fork_entropy"] == pytest.approx(
        -0.8 / 3
    )  # the old key: base forks
    table = fork_difference_table(a)
    assert [line[0] for line in table] == ["the base model", "the SSD model", "both models (symmetric)"]
    assert (
        table[0][2:] == ["15", "0.867", "0.600", "-0.267 [-0.267, -0.267]"]
        and table[2][5] == "+0.000 [+0.000, +0.000]"
    )


def test_bootstrap_resamples_replies_and_covers_the_known_difference():
    """SSD is 0.3 nats flatter at forks, plus a per-reply offset (sd 0.2) shared by all positions of a reply.
    The CI must cover 0.3 and be as wide as the spread of reply means implies: resampling positions as
    if independent would give one about sqrt(positions per reply) ~ 7x narrower."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(20, 80, size=20)
    offsets = 0.3 + rng.normal(0, 0.2, size=20)
    replies = [
        [(5, 5, 1.0, 1.0 + d + e) for e in rng.normal(0, 0.01, size=m)] for m, d in zip(lengths, offsets, strict=True)
    ]
    replies[0] += [(1, 1, 0.1, 0.1)]  # one lock, which no fork statistic may see
    a = summarize(synthetic_positions(replies), SYNTHETIC_CFG)
    diff = a["paired_entropy"][0]["both"]["fork"]["ssd_minus_base"]
    per_position = np.concatenate([[ssd - base for *_, base, ssd in r if base > 0.5] for r in replies])
    assert diff["mean"] == pytest.approx(per_position.mean())  # a mean over positions, not over reply means
    assert diff["lo"] < 0.3 < diff["hi"]
    reply_means = np.array([np.mean([ssd - base for *_, base, ssd in r if base > 0.5]) for r in replies])
    half_width = 1.96 * reply_means.std() / np.sqrt(len(replies))
    assert (diff["hi"] - diff["lo"]) / 2 == pytest.approx(half_width, rel=0.35)
    assert a["bootstrap"] == {"unit": "reply", "resamples": 1000, "seed": 0, "ci": 0.95}
    assert summarize(synthetic_positions(replies), SYNTHETIC_CFG)["paired_entropy"] == a["paired_entropy"]  # seeded


def test_a_class_without_positions_has_no_means():
    a = summarize(synthetic_positions([[(4, 1, 1.0, 0.1), (1, 4, 0.1, 1.0)]]), SYNTHETIC_CFG)
    both = a["paired_entropy"][0]["both"]
    assert both["n_fork"] == 0 and both["fork"] == {"base": None, "ssd": None, "ssd_minus_base": None}
    assert fork_difference_table(a)[2][2:] == ["0", "-", "-", "-"]


def test_summarize_rewrites_an_older_analysis_without_models(tmp_path):
    """`ssd analyze summarize DIR`: the current summary from the scored positions and the manifest's config;
    what the old analysis.json held is kept as it was."""
    from typer.testing import CliRunner

    from selfdistill.analyze import _save_npz, resummarize
    from selfdistill.cli import app
    from selfdistill.manifest import RunDir

    pos = synthetic_positions([[(4, 1, 1.0, 0.2), (1, 4, 0.2, 1.0), (4, 4, 0.9, 0.7)]] * 2)
    run = RunDir.open(tmp_path / "analysis", "analyze", SYNTHETIC_CFG, {})
    with pytest.raises(AnalyzeError, match="not a finished `ssd analyze` directory"):
        resummarize(run.path)
    for name in ("base", "ssd"):
        _save_npz(run.path / f"positions_{name}.npz", pos[name])
    current = summarize(pos, SYNTHETIC_CFG)
    kept = {
        "replies": [{"id": "a", "reply_tokens": 3}, {"id": "b", "reply_tokens": 3}],
        "models": {"base": {"model": "m"}},
    }
    old = {
        **{k: v for k, v in current.items() if k not in ("fork_rules", "fair_rule", "bootstrap", "paired_entropy")},
        **kept,
    }
    (run.path / "analysis.json").write_text(json.dumps(old))
    run.finish()
    result = CliRunner().invoke(app, ["analyze", "summarize", str(run.path)])
    assert result.exit_code == 0, result.output
    assert json.loads((run.path / "analysis.json").read_text()) == json.loads(json.dumps({**current, **kept}))
    assert (run.path / "fig6c_entropy.png").is_file()
