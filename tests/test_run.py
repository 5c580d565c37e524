"""`ssd run` and `ssd sweep` end to end through the CLI on tiny-random: every stage and the report, an
identical rerun that is all cached, a changed eval setting that redoes only what depends on it, and the
T_train x T_eval grid, whose T_train of the run reuses the run's stage directories."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from selfdistill.manifest import load_manifest

pytestmark = pytest.mark.integration

STAGES = ("samples", "train", "eval-base", "eval-ssd", "analysis")
T_TRAIN, T_EVALS = 1.6, [0.5, 1.0]
CONFIG = {
    "model": "tiny-random",
    # random weights rarely write a newline: of 8 replies of 32 tokens, one or two are not one-line stubs,
    # enough to train on
    "sample": {"prompts": "mbpp-train", "decontaminate": ["humaneval"], "limit": 8, "temperature": T_TRAIN,
               "max_tokens": 32, "max_model_len": 1024, "backend": "hf"},
    "train": {"global_batch_size": 2, "per_device_batch_size": 2, "max_steps": 2, "learning_rate": 1e-3,
              "min_learning_rate": 1e-4, "warmup_ratio": 0.0},
    "eval": {"benchmark": "humaneval", "limit": 4, "temperatures": list(T_EVALS), "n": 2, "ks": [1, 2],
             "max_tokens": 16, "max_model_len": 1024, "backend": "hf", "workers": 1},
    "analyze": {"limit": 2, "t_evals": list(T_EVALS)},
}  # fmt: skip


def ssd(*args: str) -> tuple[str, float]:
    """Run the CLI; its stderr (the stage log) and wall time."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "selfdistill", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stderr, time.perf_counter() - start


def summary(eval_dir: Path) -> dict:
    return json.loads((eval_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run") / "config.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "output_dir": str(path.parent / "out")}))
    return path


@pytest.fixture(scope="module")
def first_run(tiny_model, config_file) -> dict:
    _, seconds = ssd("run", "--config", str(config_file))
    root = config_file.parent / "out"
    return {
        "root": root,
        "seconds": seconds,
        "dirs": {name: Path(s["dir"]) for name, s in load_manifest(root)["stages"].items()},
    }


def test_run_finishes_every_stage_and_reports_the_summaries(first_run):
    root, dirs = first_run["root"], first_run["dirs"]
    manifest = load_manifest(root)
    assert manifest["finished_at"] and set(manifest["stages"]) == {*STAGES, "report"}
    for name in STAGES:
        assert (root / name).resolve() == dirs[name].resolve() and dirs[name].name.startswith(f"{name}-")
        assert load_manifest(dirs[name])["finished_at"] and not manifest["stages"][name]["skipped"]
    assert load_manifest(dirs["samples"])["counts"]["samples"] == 8 and load_manifest(dirs["train"])["steps"] == 2
    base, ssd_ = summary(dirs["eval-base"]), summary(dirs["eval-ssd"])
    assert base["n_problems"] == ssd_["n_problems"] == 4 and set(base["temperatures"]) == set(
        ssd_["temperatures"]
    ) == {"0.50", "1.00"}
    assert ssd_["model"] == load_manifest(dirs["train"])["model_dir"]
    compare = json.loads((root / "compare.json").read_text())
    assert (compare["a"], compare["b"], compare["n_problems"]) == (str(dirs["eval-base"]), str(dirs["eval-ssd"]), 4)

    html, md = (root / "report" / "report.html").read_text(), (root / "report" / "report.md").read_text()
    c = compare["test"]
    for doc in (html, md):
        for s in (
            base,
            ssd_,
        ):  # the headline: each model's dev-chosen T and its test score, as the summaries have them
            for metric in ("pass@1", "pass@2"):
                sel = s["selection"][metric]
                assert (
                    f"{100 * sel['test_score']:.1f} [{100 * sel['test_ci_lo']:.1f}, {100 * sel['test_ci_hi']:.1f}] "
                    f"at T={sel['best_T']:g}" in doc
                )
        assert (
            f"{100 * c['mean_diff']:+.1f} [{100 * c['ci_lo']:+.1f}, {100 * c['ci_hi']:+.1f}], p={c['p_value']:.3g}"
            in doc
        )
        assert "Not run" not in doc and "Could not be rendered" not in doc


def test_identical_rerun_is_all_cached(first_run, config_file):
    root, dirs = first_run["root"], first_run["dirs"]
    log, seconds = ssd("run", "--config", str(config_file))
    stages = load_manifest(root)["stages"]
    for name in STAGES:
        assert (
            stages[name]["skipped"] and stages[name]["seconds"] < 1 and (root / name).resolve() == dirs[name].resolve()
        )
        assert f"{name} cached" in log
    assert seconds < first_run["seconds"] / 2, (
        f"cached rerun took {seconds:.0f} s, the first run {first_run['seconds']:.0f} s"
    )


def test_changed_eval_setting_redoes_only_eval_and_analysis(first_run, config_file):
    root, dirs = first_run["root"], first_run["dirs"]
    kept = {name: (dirs[name] / "manifest.json").read_bytes() for name in ("samples", "train")}
    ssd("run", "--config", str(config_file), "eval.limit=5")
    stages = load_manifest(root)["stages"]
    for name in ("samples", "train"):  # reused as they were: not even reopened
        assert stages[name]["skipped"] and (root / name).resolve() == dirs[name].resolve()
        assert (dirs[name] / "manifest.json").read_bytes() == kept[name]
    for name in (
        "eval-base",
        "eval-ssd",
        "analysis",
    ):  # redone in new directories; the old ones stay for a switch back
        assert not stages[name]["skipped"] and (root / name).resolve() != dirs[name].resolve()
        assert load_manifest(root / name)["finished_at"] and load_manifest(dirs[name])["finished_at"]
    assert summary(root / "eval-base")["n_problems"] == summary(root / "eval-ssd")["n_problems"] == 5
    assert json.loads((root / "compare.json").read_text())["n_problems"] == 5


def test_sweep_grid_heatmap_and_fit_reusing_the_runs_stages(first_run, config_file):
    root, dirs = first_run["root"], first_run["dirs"]
    t_trains = [1.0, T_TRAIN]
    trained = (dirs["train"] / "manifest.json").read_bytes()
    ssd(
        "sweep",
        "--config",
        str(config_file),
        "sweep.t_trains=" + ",".join(map(str, t_trains)),
        "sweep.t_evals=" + ",".join(map(str, T_EVALS)),
    )
    (out,) = root.glob("sweep-*")
    assert load_manifest(out)["finished_at"]
    grid = json.loads((out / "grid.json").read_text())
    assert [(c["t_train"], c["t_eval"]) for c in grid["cells"]] == [(a, b) for a in t_trains for b in T_EVALS]
    for cell in grid["cells"]:
        assert 0 <= cell["score"] <= 1 and cell["score"] == grid["ssd"][str(cell["t_train"])][str(cell["t_eval"])]
        assert cell["t_eff"] == pytest.approx(cell["t_train"] * cell["t_eval"])
    assert {t: sorted(row) for t, row in grid["ssd"].items()} == {
        str(t): [str(te) for te in T_EVALS] for t in t_trains
    }
    fit = grid["t_eff_fit"]
    assert fit["n"] == 4 and math.isfinite(fit["r2"]) and {"a", "b", "c", "peak_T_eff"} <= set(fit)
    for png in ("heatmap.png", "teff_fit.png"):
        assert (out / png).stat().st_size > 1000
    # the run's T_train is the same stages: its samples, model and evals are reused, the other T_train gets its own
    assert grid["eval_dirs"]["base"] == str(dirs["eval-base"]) and grid["eval_dirs"][str(T_TRAIN)] == str(
        dirs["eval-ssd"]
    )
    assert (dirs["train"] / "manifest.json").read_bytes() == trained and len(list(root.glob("train-*"))) == 2
    # the base model at T_eff of SSD's best cell (ties: the lowest T_eff), compared on test
    teff = grid["teff_baseline"]
    best = max(grid["cells"], key=lambda c: (c["score"], -c["t_eff"]))
    assert (teff["t_train"], teff["t_eval"], teff["t_eff"]) == (
        best["t_train"],
        best["t_eval"],
        round(best["t_eff"], 2),
    )
    assert (
        set(summary(Path(teff["eval_dir"]))["temperatures"]) == {f"{teff['t_eff']:.2f}"} and "test" in teff["compare"]
    )
    run_row = {
        e["temperature"]: e["pass@1"]["all"]["mean"] for e in summary(dirs["eval-ssd"])["temperatures"].values()
    }
    assert [c["score"] for c in grid["cells"] if c["t_train"] == T_TRAIN] == [run_row[te] for te in T_EVALS]
