"""`ssd report CONFIG.yaml ... --out DIR` on an experiment laid out as `ssd sweep` leaves it: two benchmarks
sharing T_train stages, the stage directories recorded in the sweeps' manifests, eval dirs in the
two-phase protocol written through the real results.summarize, and grid.json T_eff baselines. The pooled
comparison must equal one computed by hand from the results."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from selfdistill import benchmarks, fit, metrics
from selfdistill import results as R
from selfdistill.config import OBJECTIVES, FitConfig, RunConfig, load_run_config
from selfdistill.manifest import RunDir, atomic_write_json, atomic_write_jsonl, load_manifest
from selfdistill.pipeline import Stages, open_sweep, sweep_stages
from selfdistill.sweep_report import Benchmark, sweep_report

T_EVALS = [0.0, 0.8]
CONFIG = {
    "model": "qwen2.5-coder-0.5b-instruct",
    "sample": {"limit": 8},
    "eval": {"limit": 12, "temperatures": T_EVALS, "n": 2, "test_n": 4, "dev_fraction": 0.5},
    "sweep": {"t_trains": [1.6], "t_evals": T_EVALS},
}


def _eval_dir(path: Path, cfg: RunConfig, model: str, skill: float, seed: int, temps=T_EVALS) -> dict[float, dict]:
    """A finished two-phase eval: every T on dev (n), the dev-best T also on test (test_n); without test_n,
    every T on every problem."""
    bench = benchmarks.get(cfg.eval.benchmark)
    ecfg = cfg.eval.__class__(**{**cfg.eval.__dict__, "model": model, "temperatures": temps})
    problems = bench.load(limit=ecfg.limit, seed=ecfg.seed)
    dev, test = metrics.dev_test_split([p.id for p in problems], ecfg.dev_fraction, ecfg.seed)
    rng = random.Random(seed)

    def rec(pid, T, j):
        passed = rng.random() < skill + 0.2 * T
        return {
            "problem_id": pid,
            "temperature": T,
            "sample_index": j,
            "passed": passed,
            "status": "passed" if passed else "failed",
            "reply_tokens": 50,
            "finish_reason": "stop",
        }

    decoded = dev if ecfg.test_n else dev + test
    results = {
        T: {(pid, j): rec(pid, T, j) for pid in decoded for j in range(R.samples_per_problem(ecfg, T))} for T in temps
    }
    if ecfg.test_n:
        best = metrics.best_on_dev({T: R.per_problem_pass_at_k(r.values(), dev, 1) for T, r in results.items()}, dev)
        results[best] |= {
            (pid, j): rec(pid, best, j) for pid in test for j in range(R.samples_per_problem(ecfg, best, test=True))
        }
    run = RunDir.open(path, "eval", ecfg, {})
    (path / "results").mkdir()
    for T, records in results.items():
        (path / "results" / f"T{T:.2f}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records.values()))
    R.write_summary(path, R.summarize(ecfg, bench, problems, results))
    run.finish(n_problems=len(problems))
    return results


@pytest.fixture
def experiment(tmp_path):
    configs = []
    for name in ("humaneval", "mbpp"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            yaml.safe_dump(
                {**CONFIG, "output_dir": str(tmp_path / "runs"), "eval": {**CONFIG["eval"], "benchmark": name}}
            )
        )
        cfg = load_run_config(config_file=str(path))
        recorded = open_sweep(cfg, sweep_stages(cfg))  # as `ssd sweep` starts
        b = Benchmark.load(path)
        _eval_dir(b.base_dir, b.cfg, b.cfg.model, 0.3, seed=1)
        _eval_dir(b.ssd_dir(1.6), b.cfg, "ssd", 0.5, seed=2)
        teff_dir = b.base_dir.with_name(f"eval-base-teff-{name}")
        _eval_dir(teff_dir, b.cfg, b.cfg.model, 0.3, seed=3, temps=[1.28])
        grid = {
            "metric": "pass@1",
            "split": "dev",
            "t_trains": [1.6],
            "t_evals": T_EVALS,
            "base": {"0.0": 0.1, "0.8": 0.2},
            "ssd": {"1.6": {"0.0": 0.3, "0.8": 0.4}},
            "cells": [],
            "t_eff_fit": None,
            "teff_baseline": {
                "t_train": 1.6,
                "t_eval": 0.8,
                "t_eff": 1.28,
                "eval_dir": str(teff_dir),
                "ssd_eval_dir": str(b.ssd_dir(1.6)),
            },
        }
        (recorded.path / "grid.json").write_text(json.dumps(grid))
        recorded.finish()
        configs.append(path)
    return configs


def test_pooled_headline_equals_the_comparison_recomputed_from_results(experiment, tmp_path):
    path = sweep_report(experiment, tmp_path / "out")
    text = path.read_text()
    a, b = [], []
    for config in experiment:
        bench = Benchmark.load(config)
        for scores, d in ((a, bench.base_dir), (b, bench.ssd_dir(1.6))):
            summary, results = R.load_results(d)
            T = summary.chosen(1).best_T
            per = R.per_problem_pass_at_k(results[T], summary.test_ids, 1)
            scores += [per[i] for i in summary.test_ids]
    c = metrics.paired_comparison(a, b)
    pooled = next(line for line in text.splitlines() if line.startswith("| pooled (2 benchmarks)"))
    assert f"{100 * c['mean_diff']:+.1f} [{100 * c['ci_lo']:+.1f}, {100 * c['ci_hi']:+.1f}]" in pooled
    assert f"| {len(a)} |" in pooled and f"{100 * np.mean(b):.1f}" in pooled
    assert f"T_train 1.6: SSD - base = {100 * c['mean_diff']:+.1f} points" in text
    assert "T_eff 1.28" in text and "humaneval_plus" not in text
    assert "Not run" in text  # no training or samples stage exists in this layout


def test_configs_of_different_experiments_are_refused(experiment, tmp_path):
    from selfdistill.config import ConfigError

    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**yaml.safe_load(experiment[0].read_text()), "sample": {"limit": 9}}))
    with pytest.raises(ConfigError, match="must share model, sample and train"):
        sweep_report([experiment[0], other], tmp_path / "out")


def pooled_line(report: Path) -> str:
    return next(line for line in report.read_text().splitlines() if line.startswith("| pooled (2 benchmarks)"))


def test_the_report_reads_the_directories_the_sweep_recorded(experiment, tmp_path):
    """An SSD eval moved elsewhere and recorded there is found there: the report derives no directory."""
    before = pooled_line(sweep_report(experiment, tmp_path / "out"))
    sweep = Benchmark.load(experiment[0]).sweep_dir
    manifest = load_manifest(sweep)
    moved = tmp_path / "elsewhere" / "eval-ssd-moved"
    moved.parent.mkdir()
    Path(manifest["stages"]["1.6"]["eval-ssd"]).rename(moved)
    manifest["stages"]["1.6"]["eval-ssd"] = str(moved)
    atomic_write_json(sweep / "manifest.json", manifest)
    text = sweep_report(experiment, tmp_path / "out").read_text()
    assert pooled_line(tmp_path / "out" / "REPORT.md") == before
    assert "| eval-ssd (T_train 1.6, humaneval) | " in text and "| eval-ssd-moved |" in text


def test_a_sweep_not_started_shows_as_not_run(experiment, tmp_path):
    """A third benchmark whose sweep never started (no manifest, so no directories): its rows and its
    pre-registered endpoint say "not run", and the other two still pool."""
    third = tmp_path / "humaneval_plus.yaml"
    config = yaml.safe_load(experiment[0].read_text())
    config["eval"]["benchmark"] = "humaneval_plus"
    config["report"] = {"primary": ["P1: pass@1 ssd@0.8 vs base@0.8"]}
    third.write_text(yaml.safe_dump(config))
    assert Benchmark.load(third).stages == {1.6: {}}
    text = sweep_report([*experiment, third], tmp_path / "out").read_text()
    assert "| humaneval_plus | - | not run | not run | - |" in text
    assert "| P1 (humaneval_plus) | pass@1: ssd@0.8 vs base@0.8 | - | - | not run |" in text
    assert "| eval-base (humaneval_plus) | - | - | - | not run or unfinished |" in text
    assert pooled_line(tmp_path / "out" / "REPORT.md")


def test_sweeps_started_before_they_recorded_their_stages_are_derived_as_they_ran(monkeypatch):
    """The committed experiment's sweeps predate the record: their directories are derived from the
    config, and agree with the eval directories their grid.json recorded."""
    monkeypatch.chdir(Path(__file__).parents[1])  # the configs' output_dir is relative to the repository
    for config in ("humaneval_plus.yaml", "mbpp.yaml"):
        b = Benchmark.load(Path("experiments/ssd-qwen0.5b") / config)
        assert "stages" not in load_manifest(b.sweep_dir) and b.grid
        assert b.base_dir == Path(b.grid["eval_dirs"]["base"])
        assert {t: b.ssd_dir(t) for t in b.stages} == {t: Path(b.grid["eval_dirs"][str(t)]) for t in (1.6, 1.0)}


def test_a_run_config_reports_the_directories_ssd_run_recorded(tmp_path):
    """A config run with `ssd run`, not swept (experiment 2): one T_train, "ssd" names its SSD eval, and the
    directories are the ones RUN_DIR/manifest.json records (none before the run started), unless another
    config sharing the output_dir (the soft-target fallback) ran last."""
    config = tmp_path / "run.yaml"
    run = {
        **CONFIG,
        "output_dir": str(tmp_path / "runs"),
        "sample": {"limit": 8, "temperature": 1.6},
        "eval": {**CONFIG["eval"], "benchmark": "humaneval"},
        "report": {"primary": ["P1: pass@1 ssd@0.8 vs base@0.8"]},
    }
    del run["sweep"]
    config.write_text(yaml.safe_dump(run))
    derived = Stages.of(load_run_config(config_file=str(config))).dirs  # before `ssd run` started: its own
    assert Benchmark.load(config).stages == {1.6: {name: d for name, d in derived.items() if name != "report"}}
    text = sweep_report([config], tmp_path / "out").read_text()
    assert "| P1 | pass@1: ssd@0.8 vs base@0.8 | - | - | not run |" in text
    stages = {"eval-base": {"dir": "/elsewhere/eval-base"}}

    def run_recorded(path: Path) -> None:  # as `ssd run` of that config records its directories
        cfg = Stages.of(load_run_config(config_file=str(path))).cfg
        RunDir.open(tmp_path / "runs", "run", cfg, index=True).update(stages=stages)

    run_recorded(config)
    b = Benchmark.load(config)
    assert b.base_dir == Path("/elsewhere/eval-base") and b.cfg.sweep.t_evals == T_EVALS
    other = tmp_path / "soft.yaml"
    other.write_text(yaml.safe_dump({**run, "train": {"objective": "soft"}}))
    run_recorded(other)  # the fallback's `ssd run` took the manifest over: this config's directories are its own
    assert Benchmark.load(config).base_dir == derived["eval-base"]
    assert Benchmark.load(other).base_dir == Path("/elsewhere/eval-base")


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_the_setup_names_how_the_model_was_trained(tmp_path, objective):
    """The soft-target variant (experiment 2's fallback) is not described as the paper's SFT on raw samples."""
    config = tmp_path / "run.yaml"
    run = {**CONFIG, "output_dir": str(tmp_path / "runs"), "train": {"objective": objective}}
    del run["sweep"]
    config.write_text(yaml.safe_dump(run))
    text = sweep_report([config], tmp_path / "out").read_text()
    assert f"Full {OBJECTIVES[objective]}: lr" in text
    assert ("SFT on the raw samples" in text) == (objective == "hard")


def test_a_soft_run_on_recomputed_targets_says_how_they_were_made(tmp_path):
    """Experiment 2's fallback: samples drawn without q, then `ssd samples targets`. The soft run's report
    describes the recomputed targets, times the teacher forcing, and reproduces it in order (`ssd run`
    alone would sample storing q); a hard run on the same samples mentions none of it."""
    configs = {}
    for objective in ("hard", "soft"):
        configs[objective] = tmp_path / f"{objective}.yaml"
        run = {**CONFIG, "output_dir": str(tmp_path / "runs"), "train": {"objective": objective}}
        del run["sweep"]
        configs[objective].write_text(yaml.safe_dump(run))
    hard = Benchmark.load(configs["hard"])
    samples = hard.stages[1.6]["samples"]
    RunDir.open(samples, "sample", hard.cfg.sample, {}).finish(
        counts={"samples": 8, "kept": 8}, length_histogram=[{"from": 1, "to": 31, "samples": 8}]
    )
    sessions = [{"seconds": 100.0, "teacher_forced_tokens": 5000}, {"seconds": 150.0, "teacher_forced_tokens": 10000}]
    counts = {"reply_tokens": 4000, "mean_survivors": 2.43, "sampled_outside_support": 8}
    atomic_write_json(
        samples / "targets.json",
        {"source": "teacher forcing", "precision": "float32", "started_at": "2026-12-07T08:00:00+0000",
         "finished_at": "2026-12-07T12:00:00+0000", "sessions": sessions, "counts": counts},
    )  # fmt: skip
    assert Benchmark.load(configs["soft"]).stages[1.6]["samples"] == samples  # the soft run trains on them

    text = sweep_report([configs["soft"]], tmp_path / "soft").read_text()
    assert "q was recomputed after sampling by teacher forcing the sampling model in float32" in text
    assert "4,000 reply tokens, 2.43 survivors on average" in text and "at 8 of them (0.20%)" in text
    # 4 h from first start to finish; 250 s working; 15,000 tokens in 250 s: 60 tokens/s
    assert f"| targets by teacher forcing (T_train 1.6) | 240.0 | 4.2 | 60.0 | {samples.name} |" in text
    lines = text.splitlines()
    order = [f"| ssd sample --config {configs['soft']} --output-dir {samples} |", f"| ssd samples targets {samples} |"]
    order.append(f"| ssd run --config {configs['soft']} |")
    assert [lines.index(line) for line in order] == sorted(lines.index(line) for line in order)
    hard_text = sweep_report([configs["hard"]], tmp_path / "hard").read_text()
    assert all(
        phrase not in hard_text for phrase in ("q was recomputed", "targets by teacher forcing", "ssd samples targets")
    )


def test_fixed_temperatures_score_every_problem_paired_per_difficulty(tmp_path):
    """Experiment 2's protocol (eval.dev_fraction 0, `ssd run`): no temperature is chosen, so the report
    pairs both models on every problem at each temperature, overall and per difficulty, and reads its
    verdict from the pre-registered endpoints; the unfinished training shows its tokens/s and MFU, and
    the distillation fit its rows and the commands that wrote them."""
    config = tmp_path / "run.yaml"
    run = {
        "model": "qwen2.5-coder-0.5b-instruct",
        "output_dir": str(tmp_path / "runs"),
        "sample": {"limit": 8, "temperature": 1.6},
        "eval": {
            "benchmark": "leetcode",
            "limit": 12,
            "temperatures": T_EVALS,
            "n": 2,
            "ks": [1, 2],
            "dev_fraction": 0,
        },
        "report": {"primary": ["P1: pass@1 ssd@0.8 vs base@0.8"]},
    }
    config.write_text(yaml.safe_dump(run))
    b = Benchmark.load(config)
    assert b.fixed and not b.swept
    base = _eval_dir(b.base_dir, b.cfg, b.cfg.model, 0.2, seed=1)
    ssd = _eval_dir(b.ssd_dir(1.6), b.cfg, "ssd", 0.4, seed=2)
    train_dir = b.stages[1.6]["train"]
    RunDir.open(train_dir, "train", b.cfg.train, {}).update(  # a training still running, two steps timed
        plan={"processes": 1, "optimizer_steps": 10},
        compute={"parameters": 100, "trainable_parameters": 100, "flops_per_token": 600, "peak_dtype": "bfloat16",
                 "device": "cpu", "matmul_peak_flops": 1e6},
    )  # fmt: skip
    (train_dir / "loss.csv").write_text("step,num_tokens,loss,seconds\n1,1000,1.0,\n2,3000,0.9,20\n3,4000,0.8,30\n")
    fit_dir = train_dir / "fit"
    RunDir.open(fit_dir, "fit", FitConfig(train_dir=str(train_dir), train_samples=64), {})
    target = {"support_len": np.array([1, 5, 1, 5]), "reply": np.array([0, 0, 1, 1]), "target_entropy": np.ones(4)}
    keys = ("tail", "within_kl", "entropy", "tv")
    atomic_write_jsonl(  # every measure halved by step 20
        fit_dir / "fit.jsonl",
        [fit.summarize(s, "m", {k: np.full(4, v) for k in keys}, target, 1) for s, v in ((0, 0.5), (20, 0.25))],
    )

    text = sweep_report([config], tmp_path / "out").read_text()
    summary = R.load_summary(b.base_dir)
    assert summary.by_difficulty and summary.test_ids == summary.problem_ids  # every problem, labelled
    lines = text.splitlines()
    for T, k in ((0.0, 1), (0.8, 1), (0.8, 2)):
        first = lines.index(next(line for line in lines if line.startswith(f"| leetcode: pass@{k} at T_eval {T:g} |")))
        for line, (group, ids) in zip(
            lines[first:], {"all": summary.problem_ids, **summary.by_difficulty}.items(), strict=False
        ):
            a = R.per_problem_pass_at_k(base[T].values(), ids, k)
            c = R.per_problem_pass_at_k(ssd[T].values(), ids, k)
            want = metrics.paired_comparison([a[i] for i in ids], [c[i] for i in ids])
            assert f"| {group} | {len(ids)} |" in line
            assert f"{100 * want['mean_diff']:+.1f} [{100 * want['ci_lo']:+.1f}, {100 * want['ci_hi']:+.1f}]" in line
    a = R.per_problem_pass_at_k(base[0.8].values(), summary.problem_ids, 1)
    c = R.per_problem_pass_at_k(ssd[0.8].values(), summary.problem_ids, 1)
    p1 = metrics.paired_comparison(list(a.values()), [c[i] for i in a])
    assert f"P1 (pass@1, ssd@0.8 vs base@0.8): {100 * p1['mean_diff']:+.1f} points" in text
    assert "dev-chosen" not in text and "picks its T_eval" not in text and "ssd sweep" not in text
    # 4,000 - 1,000 tokens in 50 s: 60 tokens/s; 600 FLOPs a token at a peak of 1e6 FLOP/s: MFU 3.6%
    assert "step 3 of 10. So far: 60.0 tokens/s" in text and "over 2 timed steps of 3" in text and "MFU 3.6%" in text
    assert "| 20 | heldout | fork |" in text and "| 20 | -50% | -50% | -50% | -50% | -50% | -50% |" in text
    assert f"ssd analyze fit --train-dir {train_dir} --train-samples 64 --step 20" in text
