"""The decoding skeleton sample and eval share: request seeds, sampling specs from a config, the engine
it borrows or loads, and the journaled stream that survives a crash."""

from dataclasses import replace

import pytest
from test_sample import STATEMENTS, CrashingStream, config

from selfdistill import decoding
from selfdistill.config import EvalConfig, SampleConfig
from selfdistill.decoding import Decoder, request_seed
from selfdistill.generate import JOURNAL, Request, SamplingSpec
from selfdistill.manifest import RunDir, load_manifest

# Seeds of the two formulas the skeleton replaced, computed by selfdistill before it (commit b4d8e37):
# sample.sample_seed(run_seed, prompt_id, sample_index) and
# evaluate.sample_seed(seed, problem_id, temperature, sample_index). Journals, shards and eval results
# on disk hold these seeds, so a resume depends on them.
SAMPLE_SEEDS = {(0, "p1", 0): 6230937410799313631, (3, "leetcode/two-sum", 1): 4891171389250534144}
EVAL_SEEDS = {
    (0, "HumanEval/1", 0.7, 0): 1235163964036101611,
    (5, "HumanEval/1", 0.0, 2): 2018537468887414813,
    (0, "HumanEval/1", 0, 0): 6628796990970777017,  # an int temperature hashes as written: "0", not "0.0"
    (0, "Mbpp/2", 1.1, 3): 6480992530542410774,
}


def test_request_seed_reproduces_the_seeds_of_sample_and_eval():
    assert {key: request_seed(*key) for key in SAMPLE_SEEDS} == SAMPLE_SEEDS
    assert {(s, p, T, j): request_seed(s, p, j, T) for s, p, T, j in EVAL_SEEDS} == EVAL_SEEDS


def test_request_seeds_depend_on_every_component():
    base = request_seed(0, "HumanEval/1", 0, 0.7)
    others = {
        request_seed(1, "HumanEval/1", 0, 0.7),
        request_seed(0, "HumanEval/2", 0, 0.7),
        request_seed(0, "HumanEval/1", 0, 0.8),
        request_seed(0, "HumanEval/1", 1, 0.7),
        request_seed(0, "HumanEval/1", 0),  # a sampling stage's seed, without the temperature
    }
    assert base not in others and len(others) == 5 and 0 <= base < 2**63


def test_spec_from_config_is_what_each_stage_decoded_with():
    """The specs sample and eval built field by field before the skeleton: a spec is part of each
    journaled request's id, so an unfinished stage resumes from its journal only if they are equal."""
    cfg = SampleConfig(temperature=1.2, top_k=5, top_p=0.9, min_p=0.05, n=3, max_tokens=77, seed=4, stop=["\n\n\n"])
    cfg = replace(cfg, per_request_seeds=False, store_targets=True)
    assert SamplingSpec.from_config(cfg, temperature=cfg.temperature) == SamplingSpec(
        1.2, 5, 0.9, 0.05, 1, 77, 4, ["\n\n\n"], False, True
    )
    ev = EvalConfig(top_k=20, top_p=0.95, min_p=0.01, n=4, max_tokens=99, seed=2)
    for T in (0.0, 0.7):
        assert SamplingSpec.from_config(ev, temperature=T) == SamplingSpec(
            T, 20, 0.95, 0.01, 1, 99, 2, per_request_seeds=True
        )


def decode(cfg: SampleConfig, generator, seen: list | None = None) -> tuple[dict, dict]:
    """Three units of two prompts through the skeleton: {unit: [(tokens, finish reason)]}, and the manifest;
    `seen` gets the manifest's sessions as each unit arrives."""
    decoder = Decoder(cfg, generator)
    texts = decoder.render({f"p{i}": [{"role": "user", "content": s}] for i, s in enumerate(STATEMENTS)})
    spec = SamplingSpec.from_config(cfg, temperature=cfg.temperature)
    units = {
        k: [Request(texts[f"p{i}"], spec, request_seed(cfg.seed, f"p{i}", 0)) for i in (2 * k, 2 * k + 1)]
        for k in range(3)
    }
    run = RunDir.open(cfg.output_dir, "sample", cfg, decoder.inputs(texts))
    decoded = {}
    with decoder, decoder.decode(run, units, "decoding", str) as (_, finished):
        for key, completions in finished:
            decoded[key] = [(c.token_ids, c.finish_reason) for c in completions]
            if seen is not None:
                seen.append(load_manifest(run.path).get("sessions"))
    return decoded, load_manifest(run.path)


def test_a_crashed_stream_resumes_from_its_journal(tmp_path, hf_generator):
    """A crash after 3 of 6 requests: the journal keeps them and the session records their time; the
    rerun decodes only the other 3, gives what an uninterrupted stream gives and deletes the journal."""
    whole, _ = decode(config(tmp_path, max_tokens=8, output_dir=str(tmp_path / "whole")), hf_generator)
    cfg = config(tmp_path, max_tokens=8, output_dir=str(tmp_path / "crashed"))
    crashing = CrashingStream(hf_generator, results=3)
    with pytest.raises(KeyboardInterrupt):
        decode(cfg, crashing)
    journal = tmp_path / "crashed" / JOURNAL
    assert len(journal.read_text().splitlines()) == 3
    crashed = load_manifest(cfg.output_dir)["sessions"]
    assert [(s["samples"], s["decoded"]) for s in crashed] == [(6, 3)] and crashed[0]["generated_tokens"] > 0
    resumed = CrashingStream(hf_generator)
    decoded, manifest = decode(cfg, resumed)
    assert resumed.requested == [3] and decoded == whole and not journal.exists()
    assert [(s["samples"], s["decoded"]) for s in manifest["sessions"]] == [(6, 3), (6, 3)]
    assert manifest["sessions"][0] == crashed[0] and "placements" not in manifest


def test_a_running_session_is_in_the_manifest_before_the_stream_ends(tmp_path, hf_generator, monkeypatch):
    """kill -9 runs no handler, so the running session's totals are rewritten as units arrive (at most
    SESSION_EVERY seconds apart; here every unit)."""
    monkeypatch.setattr(decoding, "SESSION_EVERY", 0.0)
    seen = []
    _, manifest = decode(config(tmp_path, max_tokens=8, output_dir=str(tmp_path / "run")), hf_generator, seen)
    assert seen[0] is None and len(seen[-1]) == 1 and 2 <= seen[-1][0]["decoded"] < 6
    assert [s["decoded"] for s in manifest["sessions"]] == [6]


def test_an_engine_is_closed_only_by_the_decoder_that_loaded_it(tmp_path, hf_generator):
    cfg = config(tmp_path)
    with Decoder(cfg, hf_generator) as lent:
        assert lent.engine() is hf_generator
    assert hf_generator.model is not None
    with Decoder(cfg) as owner:
        loaded = owner.engine()
        assert loaded is not hf_generator and loaded.model is not None and owner.engine() is loaded
    assert loaded.model is None
    other = tmp_path / "other-model"
    other.mkdir()
    (other / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="the generator holds .*tiny-random, but the config decodes .*other-model"):
        Decoder(replace(cfg, model=str(other)), hf_generator)
