"""summary.json's declared schema (results.EvalSummary): what summarize() builds for each protocol round-trips
through its JSON, the summaries older versions wrote (the committed experiments') still read, a bad field is
one error naming the file and the field, every reader reports the split one rule picks, and a reply the
sandbox never ran has no verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_evaluate import jsonl_benchmark

from selfdistill import benchmarks as B
from selfdistill import grid, metrics
from selfdistill import results as R
from selfdistill.config import EvalConfig

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted((REPO / "experiments").glob("*/runs/eval-*/summary.json"))


def summary_of(tmp_path: Path, protocol: R.Protocol) -> R.EvalSummary:
    """summarize() on a results matrix of 12 problems, 2 samples each: T 0.5 and 1 on every problem (grid,
    replies), or T 1 on dev and T 0.5, the best on dev, on dev and test (two-phase)."""
    bench = B.get("jsonl")
    problems = bench.problems(str(jsonl_benchmark(tmp_path / "b.jsonl")))
    two_phase = protocol is R.Protocol.TWO_PHASE
    cfg = EvalConfig(benchmark="jsonl", n=2, test_n=2 if two_phase else 0, ks=[1, 2], temperatures=[0.5, 1.0])
    ids = [p.id for p in problems]
    dev, _ = metrics.dev_test_split(ids, cfg.dev_fraction, cfg.seed)

    def record(i: int, pid: str, j: int, T: float) -> dict:
        passed = i % 2 == 0 if T == 0.5 else i % 4 == j == 0  # T 0.5 is the better one on every split
        return {
            "problem_id": pid,
            "passed": passed,
            "status": "passed" if passed else "failed",
            "reply_tokens": None if protocol is R.Protocol.REPLIES else 10 + j,
            "finish_reason": "stop",
        }

    results = {
        T: {
            (pid, j): record(i, pid, j, T)
            for i, pid in enumerate(ids)
            if not two_phase or T == 0.5 or pid in dev
            for j in range(2)
        }
        for T in (0.5, 1.0)
    }
    replies = R.RepliesFile("replies.jsonl", "ab" * 32, 36) if protocol is R.Protocol.REPLIES else None
    return R.summarize(cfg, bench, problems, results, replies)


@pytest.mark.parametrize("protocol", list(R.Protocol))
def test_a_summary_round_trips_through_its_json(tmp_path, protocol):
    summary = summary_of(tmp_path, protocol)
    assert summary.protocol is protocol
    R.write_summary(tmp_path, summary)
    data = json.loads(R.summary_path(tmp_path).read_text())
    assert R.load_summary(tmp_path) == summary
    assert data["protocol"] == protocol.value
    entry = data["temperatures"]["1.00"]
    assert (
        list(entry)[:5] == ["temperature", "n", "greedy", "test_n", "ks"]
        if protocol is R.Protocol.TWO_PHASE
        else (
            list(entry)[:4] == ["temperature", "n", "greedy", "ks"]  # test_n is the two-phase protocol's alone
        )
    )
    assert entry["pass@2"]["all" if protocol is not R.Protocol.TWO_PHASE else "dev"]["n_problems"] > 0
    assert set(data["selection"]) == {"pass@1", "pass@2"} and data["selection"]["pass@1"]["best_T"] == 0.5
    if protocol is R.Protocol.REPLIES:  # what replies.py used to patch into the summary after it was built
        assert data["model"] == "replies replies.jsonl" and data["decoding"] is None
        assert data["replies"] == {"path": "replies.jsonl", "sha256": "ab" * 32, "count": 36}
        assert entry["n"] == 2 and entry["reply_tokens"] is None  # samples per problem from the file
    else:
        assert "replies" not in data and data["decoding"]["top_k"] == EvalConfig().top_k


def test_every_reader_reports_the_split_one_rule_picks(tmp_path):
    """grid.json's cells and the reports' curves: every temperature's split is `all`/`test` where every
    problem was decoded at every temperature (grid, replies), dev in the two-phase protocol."""
    for protocol, whole in ((R.Protocol.GRID, "all"), (R.Protocol.REPLIES, "all"), (R.Protocol.TWO_PHASE, "dev")):
        (tmp_path / protocol.value).mkdir()
        summary = summary_of(tmp_path / protocol.value, protocol)
        assert summary.swept_split("all") == whole
        assert summary.swept_split("test") == ("test" if whole == "all" else "dev")
        cells = grid._row(summary, "pass@1")
        assert cells == {e.temperature: getattr(e.pass_at[1], whole).mean for e in summary.entries}


@pytest.mark.skipif(not COMMITTED, reason="no committed experiment in this checkout")
def test_the_committed_experiments_summaries_read():
    """Written before the schema: the protocol as a sentence, no ks per temperature, no grading rules."""
    for path in COMMITTED:
        data = json.loads(path.read_text())
        summary = R.load_summary(path.parent)
        assert data["protocol"].startswith("two-phase") and summary.protocol is R.Protocol.TWO_PHASE
        assert summary.grading_rules is None and all(e.ks == [1] for e in summary.entries)
        written = summary.to_json()  # the same JSON but for what the schema added
        for entry in written["temperatures"].values():
            del entry["ks"]
        assert {**written, "protocol": data["protocol"]} == {**data, "grading_rules": None}


def test_older_summaries_fill_in_what_they_lack(tmp_path):
    R.write_summary(tmp_path, summary_of(tmp_path, R.Protocol.GRID))
    data = json.loads(R.summary_path(tmp_path).read_text())
    for written, protocol in (
        (None, R.Protocol.GRID),
        ("grid: every temperature on every problem (n=2)", R.Protocol.GRID),
        ("two-phase: the temperatures on dev (n=2), the dev-chosen one on test (n=4)", R.Protocol.TWO_PHASE),
        ("replies made elsewhere: replies.jsonl", R.Protocol.REPLIES),
    ):
        old = {k: v for k, v in data.items() if k not in ("protocol", "label", "grading_rules")}
        old["decoding"] = {k: v for k, v in data["decoding"].items() if k != "min_p"}
        old["temperatures"] = {n: {k: v for k, v in e.items() if k != "ks"} for n, e in data["temperatures"].items()}
        summary = R.EvalSummary.from_json(old if written is None else {**old, "protocol": written})
        assert summary.protocol is protocol and summary.label == "all tests" and summary.decoding.min_p == 0.0
        assert summary.entry(1.0).ks == [1, 2]  # the pass@k keys it has


def test_a_bad_summary_is_one_error_naming_the_file_and_the_field(tmp_path):
    R.write_summary(tmp_path, summary_of(tmp_path, R.Protocol.GRID))
    data = json.loads(R.summary_path(tmp_path).read_text())
    data["temperatures"]["1.00"]["pass@1"]["dev"]["mean"] = "high"
    R.summary_path(tmp_path).write_text(json.dumps(data))
    with pytest.raises(B.BenchmarkError, match=r"summary\.json: field 'temperatures\.1\.00\.pass_at\.1\.dev.*mean'"):
        R.load_summary(tmp_path)
    R.summary_path(tmp_path).write_text(json.dumps({**data, "protocol": "three_phase"}))
    with pytest.raises(B.BenchmarkError, match="field 'protocol'"):
        R.load_summary(tmp_path)


def test_replies_the_sandbox_never_ran_have_no_verdict():
    """not_run (the deadline passed first) and sandbox_error are graded again; so is the timeout with the
    not-run detail that records had before the not_run status; a real timeout is a verdict."""
    from selfdistill.sandbox import NOT_RUN_DETAIL, STATUSES

    assert "not_run" in STATUSES
    record = lambda status, detail="": {"status": status, "detail": detail}  # noqa: E731
    assert R.without_verdict(record("not_run", NOT_RUN_DETAIL)) and R.without_verdict(record("sandbox_error"))
    assert R.without_verdict(record("timeout", f"test 2: {NOT_RUN_DETAIL}"))
    assert not R.without_verdict(record("timeout", "wall-clock limit of 10.0s"))
