"""The eval stage: subsets and seeds, metrics from the results matrix, oracle mode, the sweep with a real
(tiny) model, resume after kill -9, and the paired comparison."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from selfdistill import benchmarks as B
from selfdistill import evaluate as E
from selfdistill import metrics
from selfdistill import results as R
from selfdistill.config import EvalConfig
from selfdistill.decoding import request_seed
from selfdistill.generate import JOURNAL, Generator
from selfdistill.manifest import read_jsonl
from selfdistill.sandbox import STATUSES


def jsonl_benchmark(path: Path, n: int = 12) -> Path:
    """n tiny problems with references; difficulty and platform alternate, for the breakdowns."""
    rows = [
        {
            "id": f"p{i}",
            "statement": f"Return {i} plus x.",
            "entry_point": "f",
            "reference": f"def f(x):\n    return x + {i}\n",
            "call_tests": [{"input": [1], "output": 1 + i}, {"input": [5], "output": 5 + i}],
            "difficulty": ["easy", "hard"][i % 2],
            "platform": ["a", "b", "c"][i % 3],
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------------------- subsets, seeds, temperatures


def test_subset_is_fixed_seeded_and_keeps_the_dev_share():
    problems = B.get("humaneval").problems()
    a = B.subset(problems, 40, seed=0)
    assert [p.id for p in a] == [p.id for p in B.subset(problems, 40, seed=0)]
    assert [p.id for p in a] != [p.id for p in B.subset(problems, 40, seed=1)]
    assert [p.id for p in a] == [p.id for p in problems if p in a]  # benchmark order
    # the subset and the dev split hash differently: a subset is not all dev (or all test)
    shares = []
    for seed in range(20):
        ids = [p.id for p in B.subset(problems, 40, seed)]
        dev, _ = metrics.dev_test_split(ids, 0.3, seed)
        shares.append(len(dev) / len(ids))
    assert 0.2 < sum(shares) / len(shares) < 0.4


def test_t_eval_joins_the_sweep_and_colliding_temperatures_are_refused():
    assert E.temperatures(EvalConfig(temperatures=[0.2, 1.1], t_eval=0.7)) == [0.2, 0.7, 1.1]
    with pytest.raises(B.BenchmarkError, match="collide"):
        E.temperatures(EvalConfig(temperatures=[0.701, 0.7]))


# ---------------------------------------------------------------------------- metrics from the matrix


def test_summary_from_a_known_results_matrix(tmp_path):
    bench = B.get("jsonl")
    problems = bench.problems(str(jsonl_benchmark(tmp_path / "b.jsonl")))
    cfg = EvalConfig(benchmark="jsonl", n=4, ks=[1, 2, 4], temperatures=[0.0, 0.5, 1.0], dev_fraction=0.5, seed=3)
    correct = {0.5: [i % 5 for i in range(12)], 1.0: [4 - i % 5 for i in range(12)]}  # correct samples out of 4
    results = {
        0.0: {
            (p.id, 0): {
                "problem_id": p.id,
                "passed": i % 2 == 0,
                "status": "passed" if i % 2 == 0 else "failed",
                "reply_tokens": 10,
                "finish_reason": "stop",
            }
            for i, p in enumerate(problems)
        }
    }
    for T, counts in correct.items():
        results[T] = {
            (p.id, j): {
                "problem_id": p.id,
                "passed": j < min(c, 4),
                "status": "passed" if j < min(c, 4) else "failed",
                "reply_tokens": 20 + j,
                "finish_reason": "length" if j == 3 else "stop",
            }
            for p, c in zip(problems, counts, strict=True)
            for j in range(4)
        }
    s = R.summarize(cfg, bench, problems, results)
    assert set(s.temperatures) == {"0.00", "0.50", "1.00"} and s.protocol is R.Protocol.GRID
    greedy = s.temperatures["0.00"]
    assert greedy.n == 1 and greedy.pass_at[4].all.mean == greedy.pass_at[1].all.mean == 0.5
    assert greedy.ks == [1, 2, 4]  # one sample: pass@k only for the ks asked (each = pass@1)
    for T, counts in correct.items():
        e = s.temperatures[R.t_label(T)]
        assert e.ks == [1, 2, 3, 4]  # every k <= n, with k = 3 that cfg.ks does not ask for
        for k in (1, 2, 3, 4):
            want = [metrics.pass_at_k(4, min(c, 4), k) for c in counts]
            got = e.pass_at[k].all
            assert got.mean == pytest.approx(sum(want) / len(want))
            assert got.ci_lo <= got.mean <= got.ci_hi
        assert e.truncated == 0.25 and e.test_n is None  # test_n: the two-phase protocol's
        assert set(e.pass_at[1].by_difficulty) == {"easy", "hard"} and set(e.pass_at[1].by_platform) == {"a", "b", "c"}
        assert e.pass_at[1].by_difficulty["easy"].n_problems == 6
    assert sorted(s.dev_ids + s.test_ids) == sorted(p.id for p in problems)
    assert s.by_difficulty == {  # the members, for paired comparisons per difficulty
        level: [p.id for p in problems if p.metadata["difficulty"] == level] for level in ("easy", "hard")
    }
    scores = {T: R.per_problem_pass_at_k(list(results[T].values()), s.problem_ids, 1) for T in results}
    want = metrics.select_temperature(scores, s.dev_ids, s.test_ids, seed=3)
    assert R.Selection(**{**want, "dev_by_T": {}, "test_by_T": {}}) == replace(s.chosen(1), dev_by_T={}, test_by_T={})
    assert s.chosen(1).dev_by_T == {str(T): score for T, score in want["dev_by_T"].items()}


# ---------------------------------------------------------------------------- oracle mode


def test_oracle_mode_end_to_end_and_resume(tmp_path, capsys):
    path = jsonl_benchmark(tmp_path / "b.jsonl", 6)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[2]["reference"] = "def f(x):\n    return x\n"  # a broken reference is listed, with the reason
    del rows[4]["reference"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = EvalConfig(
        benchmark="jsonl", benchmark_path=str(path), oracle=True, output_dir=str(tmp_path / "out"), workers=1
    )
    out = E.evaluate(cfg)
    s = json.loads((out / "summary.json").read_text())
    assert (s["n_problems"], s["passed"], s["no_reference"]) == (5, 4, ["p4"])
    assert s["failures"] == [{"problem_id": "p2", "status": "failed", "detail": "test 0: expected 3, got 1"}]
    records = read_jsonl(out / "results" / "oracle.jsonl")
    assert [r["problem_id"] for r in records] == ["p0", "p1", "p2", "p3", "p5"] and records[0]["reply"].count(
        "```"
    ) == 2
    before = (out / "results" / "oracle.jsonl").stat().st_mtime_ns
    E.evaluate(cfg)  # finished: nothing is regraded
    assert (out / "results" / "oracle.jsonl").stat().st_mtime_ns == before


def test_two_phase_summary_scores_the_grid_on_dev_and_the_chosen_t_on_test(tmp_path):
    bench = B.get("jsonl")
    problems = bench.problems(str(jsonl_benchmark(tmp_path / "b.jsonl")))
    cfg = EvalConfig(benchmark="jsonl", n=2, test_n=4, ks=[1], temperatures=[0.0, 0.5, 1.0], dev_fraction=0.5, seed=3)
    dev, test = metrics.dev_test_split([p.id for p in problems], 0.5, 3)

    def rec(pid, passed):
        return {
            "problem_id": pid,
            "passed": passed,
            "status": "passed" if passed else "failed",
            "reply_tokens": 5,
            "finish_reason": "stop",
        }

    # T=0.5 is best on dev, so it alone was decoded on test, with test_n samples
    results = {
        0.0: {(pid, 0): rec(pid, False) for pid in dev},
        1.0: {(pid, j): rec(pid, j == 0) for pid in dev for j in range(2)},
    }
    results[0.5] = {(pid, j): rec(pid, True) for pid in dev for j in range(2)} | {
        (pid, j): rec(pid, j < 3) for pid in test for j in range(4)
    }
    s = R.summarize(cfg, bench, problems, results)
    assert s.protocol is R.Protocol.TWO_PHASE
    sel = s.chosen(1)
    assert sel.best_T == 0.5 and sel.test_score == pytest.approx(0.75) and sel.oracle_T is None
    assert s.entry(1.0).pass_at[1].dev.mean == 0.5 and s.entry(1.0).pass_at[1].test is None
    assert s.entry(0.5).pass_at[1].all is not None and s.entry(0.5).test_n == 4 and s.entry(1.0).test_n == 0
    with pytest.raises(B.BenchmarkError, match="did not finish"):  # a grid temperature missing a dev problem
        R.summarize(cfg, bench, problems, {**results, 1.0: {k: v for k, v in results[1.0].items() if k[0] != dev[0]}})


def test_oracle_is_not_available_for_livecodebench(tmp_path):
    with pytest.raises(B.BenchmarkError, match="oracle not available: livecodebench has no reference solutions"):
        E.evaluate(EvalConfig(benchmark="livecodebench", oracle=True, output_dir=str(tmp_path / "out"), workers=1))
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------ the sweep with a real model, kill -9, resume

SWEEP = {
    "model": "tiny-random",
    "backend": "hf",
    "benchmark": "humaneval",
    "limit": 8,
    "temperatures": [0.0, 1.0],
    "n": 2,
    "ks": [1, 2],
    "max_tokens": 16,
    "workers": 1,
    "max_num_seqs": 4,
}  # 4 in flight: the hf backend finishes one block at a time
RUN_IN_CHILD = """
import sys
from selfdistill import evaluate as E
from selfdistill.config import EvalConfig
from selfdistill.decoding import request_seed
E.BLOCK = 4
E.evaluate(EvalConfig(**{cfg!r}))
"""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model):
    """One uninterrupted sweep, shared by the tests below (blocks of 4 so the kill lands mid-sweep)."""
    out = tmp_path_factory.mktemp("eval") / "full"
    cfg = EvalConfig(**SWEEP, output_dir=str(out))
    old, E.BLOCK = E.BLOCK, 4
    try:
        E.evaluate(cfg)
    finally:
        E.BLOCK = old
    return out


def test_sweep_writes_the_matrix_summary_and_manifest(uninterrupted):
    s = json.loads((uninterrupted / "summary.json").read_text())
    assert set(s["temperatures"]) == {"0.00", "1.00"} and s["n_problems"] == 8
    for name, n in (("0.00", 1), ("1.00", 2)):
        records = read_jsonl(uninterrupted / "results" / f"T{name}.jsonl")
        assert len(records) == 8 * n and all(set(E.RECORD_FIELDS) <= set(r) for r in records)
        assert [(r["problem_id"], r["sample_index"]) for r in records] == [
            (pid, j) for pid in s["problem_ids"] for j in range(n)
        ]
        assert all(r["seed"] == request_seed(0, r["problem_id"], r["sample_index"], r["temperature"]) for r in records)
        assert all(r["status"] in (*STATUSES, "extraction_failed") for r in records)
    for k in (1, 2):
        assert {"all", "dev", "test", "by_difficulty", "by_platform"} <= set(s["temperatures"]["1.00"][f"pass@{k}"])
        assert s["selection"][f"pass@{k}"]["best_T"] in (0.0, 1.0)
    manifest = json.loads((uninterrupted / "manifest.json").read_text())
    assert manifest["finished_at"] and set(manifest["effective_params"]) == {"0.00", "1.00"}
    assert manifest["effective_params"]["1.00"]["spec"]["top_k"] == 0


def test_kill_9_midway_then_rerun_completes_the_same_results(tmp_path, uninterrupted):
    out = tmp_path / "killed"
    cfg = dict(SWEEP, output_dir=str(out))
    child = subprocess.Popen(
        [sys.executable, "-c", RUN_IN_CHILD.format(cfg=cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    first_block = out / "results" / "T0.00.jsonl"
    deadline = time.time() + 300
    while not first_block.is_file() and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    assert first_block.is_file(), "the child never finished a block"
    on_disk = {
        name: read_jsonl(path) for name in ("0.00", "1.00") if (path := out / "results" / f"T{name}.jsonl").is_file()
    }
    done_before = sum(map(len, on_disk.values()))
    assert done_before < 8 + 16, "killed too late to test a resume"

    old, E.BLOCK = E.BLOCK, 4
    try:
        E.evaluate(EvalConfig(**cfg))
    finally:
        E.BLOCK = old
    for name in ("0.00", "1.00"):
        assert read_jsonl(out / "results" / f"T{name}.jsonl") == read_jsonl(
            uninterrupted / "results" / f"T{name}.jsonl"
        )
    assert (
        json.loads((out / "summary.json").read_text())["temperatures"]
        == json.loads((uninterrupted / "summary.json").read_text())["temperatures"]
    )
    # finished work was kept, not redone: the rerun generated only what was missing
    sessions = json.loads((out / "manifest.json").read_text())["sessions"]
    assert sessions[-1]["samples"] == 8 + 16 - done_before
    for name, records in on_disk.items():
        after = {(r["problem_id"], r["sample_index"]): r for r in read_jsonl(out / "results" / f"T{name}.jsonl")}
        assert all(after[(r["problem_id"], r["sample_index"])] == r for r in records)


def test_records_do_not_depend_on_concurrency(tmp_path, uninterrupted):
    E.evaluate(EvalConfig(**{**SWEEP, "max_num_seqs": 64}, output_dir=str(tmp_path / "wide")))
    for name in ("0.00", "1.00"):
        assert read_jsonl(tmp_path / "wide" / "results" / f"T{name}.jsonl") == read_jsonl(
            uninterrupted / "results" / f"T{name}.jsonl"
        )


class GradedMidStream:
    """A generator whose stream, after the first block's replies, waits until that block's file is on
    disk (graded while the engine holds the rest), yields two more replies and crashes (path None:
    neither); it counts the requests it is asked for."""

    def __init__(self, generator, path: Path | None):
        self.generator, self.path, self.requested = generator, path, 0

    def __getattr__(self, name):
        return getattr(self.generator, name)

    stream_units = Generator.stream_units  # the stage's entry, which streams through the stream below

    def stream(self, requests, max_in_flight=None):
        self.requested += len(requests)
        for n, result in enumerate(self.generator.stream(requests, max_in_flight)):
            if self.path and n == 4:
                deadline = time.time() + 120
                while not self.path.is_file() and time.time() < deadline:
                    time.sleep(0.05)
                assert self.path.is_file(), "the first block was not graded while the stream went on"
            if self.path and n == 6:
                raise KeyboardInterrupt("crash mid-stream")
            yield result


def test_blocks_are_graded_while_the_engine_decodes_and_a_crash_keeps_them(tmp_path, tiny_model, uninterrupted):
    from selfdistill.generate import load_generator

    cfg = EvalConfig(**SWEEP, output_dir=str(tmp_path / "crashed"))
    first_block = tmp_path / "crashed" / "results" / "T0.00.jsonl"
    old, E.BLOCK = E.BLOCK, 4
    try:
        with load_generator(tiny_model, "hf", cfg.max_model_len) as generator:
            with pytest.raises(KeyboardInterrupt):
                E.evaluate(cfg, generator=GradedMidStream(generator, first_block))
            assert (
                len(read_jsonl(first_block)) == 4 and not (tmp_path / "crashed" / "results" / "T1.00.jsonl").exists()
            )
            assert (
                len((tmp_path / "crashed" / JOURNAL).read_text().splitlines()) == 6
            )  # the 2 replies past the block too
            resumed = GradedMidStream(generator, None)
            E.evaluate(cfg, generator=resumed)
    finally:
        E.BLOCK = old
    for name in ("0.00", "1.00"):
        assert read_jsonl(tmp_path / "crashed" / "results" / f"T{name}.jsonl") == read_jsonl(
            uninterrupted / "results" / f"T{name}.jsonl"
        )
    assert resumed.requested == 8 + 16 - 6 and not (tmp_path / "crashed" / JOURNAL).exists()
    assert json.loads((tmp_path / "crashed" / "manifest.json").read_text())["sessions"][-1]["samples"] == 8 + 16 - 4


def test_sandbox_errors_and_unrun_jobs_are_regraded_on_rerun(tmp_path, uninterrupted):
    import shutil

    from selfdistill.sandbox import NOT_RUN_DETAIL

    out = tmp_path / "copy"
    shutil.copytree(uninterrupted, out)
    path = out / "results" / "T1.00.jsonl"
    records = read_jsonl(path)
    truth = [dict(r) for r in records[:3]]
    records[0].update(status="sandbox_error", passed=False, detail="the sandbox did not answer")
    records[1].update(status="not_run", passed=False, detail=NOT_RUN_DETAIL)
    records[2].update(status="timeout", passed=False, detail=NOT_RUN_DETAIL)  # as records were before not_run
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    cfg = EvalConfig(**SWEEP, output_dir=str(out))
    assert not R.eval_done(cfg)  # so `ssd run` and `ssd sweep` run it again
    E.evaluate(cfg)  # nothing left to generate: no model is loaded
    assert read_jsonl(path)[:3] == truth and R.eval_done(cfg)


def test_a_different_config_never_mixes_into_a_finished_dir(uninterrupted):
    from selfdistill.manifest import ManifestMismatch

    with pytest.raises(ManifestMismatch, match="max_tokens"):
        E.evaluate(EvalConfig(**{**SWEEP, "max_tokens": 25}, output_dir=str(uninterrupted)))


def test_two_phase_eval_decodes_the_test_split_at_the_dev_choice_only(tmp_path, tiny_model):
    out = tmp_path / "two-phase"
    cfg = EvalConfig(**{**SWEEP, "test_n": 3, "ks": [1]}, output_dir=str(out))
    E.evaluate(cfg)
    s = json.loads((out / "summary.json").read_text())
    best = s["selection"]["pass@1"]["best_T"]  # the random model solves nothing: ties pick the lowest T, greedy
    assert best == 0.0
    by_T = {name: read_jsonl(out / "results" / f"T{name}.jsonl") for name in ("0.00", "1.00")}
    assert [(r["problem_id"], r["sample_index"]) for r in by_T["1.00"]] == [
        (pid, j) for pid in s["dev_ids"] for j in range(2)
    ]
    assert [r["problem_id"] for r in by_T["0.00"]] == s["dev_ids"] + s["test_ids"]  # greedy: one sample, dev first
    sessions = json.loads((out / "manifest.json").read_text())["sessions"]
    # each reply decoded once: the test phase does not decode the dev grid again
    assert [x["samples"] for x in sessions] == [3 * len(s["dev_ids"]), len(s["test_ids"])]
    E.evaluate(cfg)  # a finished two-phase eval reloads without generating
    assert json.loads((out / "manifest.json").read_text())["sessions"] == sessions


def test_compare_two_eval_dirs(tmp_path, uninterrupted):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(uninterrupted, other)
    # make model b solve the first test problem at every temperature
    s = json.loads((other / "summary.json").read_text())
    target = s["test_ids"][0]
    for name in ("0.00", "1.00"):
        path = other / "results" / f"T{name}.jsonl"
        records = [dict(r, passed=True, status="passed") if r["problem_id"] == target else r for r in read_jsonl(path)]
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    c = R.compare(uninterrupted, other)
    assert c["metric"] == "pass@1" and c["n_problems"] == 8 and set(c["by_temperature"]) == {"0.00", "1.00"}
    base = R.load_results(uninterrupted)[1]
    assert not any(r["passed"] for records in base.values() for r in records)  # a random model solves nothing
    assert c["best_T"] == {"a": 0.0, "b": 0.0}  # ties go to the lower temperature
    assert c["test"]["mean_diff"] == pytest.approx(1 / len(s["test_ids"])) and (
        c["test"]["wins"],
        c["test"]["losses"],
    ) == (1, 0)
    same = R.compare(uninterrupted, uninterrupted)
    assert same["test"]["mean_diff"] == 0 and same["test"]["p_value"] == 1.0
