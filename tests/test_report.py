"""`ssd report` on a run directory laid out as `ssd run` leaves it (hashed stage dirs behind symlinks).
The eval summaries and compare.json come from the real results.summarize / results.compare over a
results matrix written in results.py's schema; the analysis is a real `ssd analyze` of tiny-random;
the sample and train manifests follow sample.py's and train.py's documented fields."""

import json
import random
import re
import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pytest

from selfdistill import benchmarks, metrics, plots
from selfdistill import results as R
from selfdistill.config import AnalyzeConfig, EvalConfig, ReportConfig, RunConfig, SampleConfig, TrainConfig, to_dict
from selfdistill.manifest import RunDir, atomic_write_json
from selfdistill.report import report

TEMPS = [0.2, 0.7, 1.1]
PRIMARY = ["P1: pass@1 ssd@0.7 vs base@0.7", "P2: pass@4 ssd@1.1 vs base@0.2"]
N_PROBLEMS = 16
EVAL = {
    "benchmark": "leetcode",
    "limit": N_PROBLEMS,
    "temperatures": TEMPS,
    "n": 4,
    "ks": [1, 4],
    "top_k": 20,
    "top_p": 0.8,
    "max_tokens": 256,
}


def _stage(root, name: str, stage: str, cfg, **finish) -> RunDir:
    """A finished stage dir under a hashed name, linked as RUN_DIR/<name> the way `ssd run` links it."""
    run = RunDir.open(root / f"{name}-0123456789", stage, cfg, {})
    run.finish(**finish)
    (root / name).symlink_to(run.path.name)
    return run


def _eval(root, name: str, skill: float, problems, bench, prompt_text: str, seed: int, **overrides):
    cfg = EvalConfig(model=name, **{**EVAL, **overrides})
    rng = random.Random(seed)
    results = {}
    run = RunDir.open(root / f"eval-{name}-0123456789", "eval", cfg, {})
    (run.path / "results").mkdir()
    for T in cfg.temperatures:
        records = {}
        for p in problems:
            for i in range(cfg.n):
                passed = rng.random() < skill * (1.2 - abs(T - 0.7))
                code = f"class Solution:\n    def solve(self, x):\n        return x + {i}  # {name} at T={T}\n"
                records[(p.id, i)] = {
                    "problem_id": p.id,
                    "temperature": T,
                    "sample_index": i,
                    "seed": rng.getrandbits(32),
                    "status": "passed" if passed else "failed",
                    "passed": passed,
                    "detail": "",
                    "reply": f"```python\n{code}```",
                    "reply_tokens": rng.randint(20, 256),
                    "finish_reason": "length" if rng.random() < 0.1 else "stop",
                    "prompt_text": prompt_text,
                }
        (run.path / "results" / f"T{T:.2f}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records.values()))
        results[T] = records
    R.write_summary(run.path, R.summarize(cfg, bench, problems, results))
    run.finish(n_problems=len(problems))
    (root / f"eval-{name}").symlink_to(run.path.name)


def build_run(root, tiny_model, parts=("samples", "train", "eval", "analysis")):
    from transformers import AutoTokenizer

    root.mkdir(parents=True)
    cfg = RunConfig(
        model=tiny_model,
        output_dir=str(root),
        sample=SampleConfig(model=tiny_model, limit=32),
        train=TrainConfig(model=tiny_model),
        eval=EvalConfig(model=tiny_model, **EVAL),
        report=ReportConfig(primary=PRIMARY),
    )
    stages = {}
    if "samples" in parts:
        hist = [
            {"from": 0, "to": 0, "samples": 0},
            {"from": 1, "to": 31, "samples": 3},
            {"from": 32, "to": 255, "samples": 20},
            {"from": 256, "to": 256, "samples": 9},
        ]
        counts = {
            "samples": 32,
            "kept": 30,
            "dropped": 2,
            "truncated": 9,
            "looping": 1,
            "empty": 1,
            "stub": 1,
            "shortest": 0,
            "prompt_too_long": 0,
        }
        _stage(root, "samples", "sample", cfg.sample, counts=counts, length_histogram=hist)
        stages["samples"] = 61.5
    if "train" in parts:
        run = _stage(root, "train", "train", cfg.train, final_loss=0.731, model_dir=tiny_model)
        fig, ax = plots.figure()
        ax.plot([1, 2, 3, 4], [1.2, 0.9, 0.8, 0.73], marker="o")
        plots.save(fig, run.path / "loss.png")
        stages["train"] = 120.0
    if "eval" in parts:
        bench = benchmarks.get("leetcode")
        problems = bench.problems()[:N_PROBLEMS]
        tok = AutoTokenizer.from_pretrained(tiny_model)
        prompt_text = tok.apply_chat_template(
            [{"role": "user", "content": "Solve it."}], add_generation_prompt=True, tokenize=False
        )
        _eval(root, "base", 0.35, problems, bench, prompt_text, seed=1)
        _eval(root, "ssd", 0.5, problems, bench, prompt_text, seed=2)
        _eval(
            root,
            "base-recommended",
            0.35,
            problems,
            bench,
            prompt_text,
            seed=3,
            temperatures=[0.6],
            top_k=0,
            top_p=0.95,
        )
        atomic_write_json(
            root / "compare.json",
            {
                **R.compare(root / "eval-base", root / "eval-ssd"),
                "base_settings": R.base_settings(root / "eval-base", root / "eval-base-recommended"),
            },
        )
        stages["eval-base"], stages["eval-ssd"] = 300.0, 290.0
    if "analysis" in parts:
        from selfdistill.analyze import analyze

        analyze(
            replace(
                AnalyzeConfig(),
                base_model=tiny_model,
                ssd_model=tiny_model,
                replies=str(root / "eval-base"),
                limit=2,
                t_evals=[0.5, 1.0],
                output_dir=str(root / "analysis-0123456789"),  # a model of no train dir: its truncation given
                t_train=cfg.sample.temperature,
                top_k=cfg.sample.top_k,
                top_p=cfg.sample.top_p,
            )
        )
        (root / "analysis").symlink_to("analysis-0123456789")
        stages["analysis"] = 30.0
    manifest = {
        "stage": "run",
        "config": to_dict(cfg),
        "finished_at": "now",
        "stages": {
            name: {"seconds": s, "skipped": False, "dir": str(root / f"{name}-0123456789")}
            for name, s in stages.items()
        },
    }
    atomic_write_json(root / "manifest.json", manifest)
    return root


@pytest.fixture(scope="module")
def full_report(tiny_model, tmp_path_factory):
    root = build_run(tmp_path_factory.mktemp("report") / "run", tiny_model)
    return root, report(root)


def test_primary_endpoints_and_pass_at_k_for_every_k(full_report):
    root, html_path = full_report
    md = (root / "report" / "report.md").read_text()
    scores = {}
    for m in ("base", "ssd"):
        _, by_T = R.load_results(root / f"eval-{m}")
        ids = json.loads((root / f"eval-{m}" / "summary.json").read_text())["problem_ids"]
        scores[m] = {(T, k): [R.per_problem_pass_at_k(by_T[T], ids, k)[i] for i in ids] for T in TEMPS for k in (1, 4)}
    p1 = metrics.paired_comparison(scores["base"][0.7, 1], scores["ssd"][0.7, 1])
    p2 = metrics.paired_comparison(scores["base"][0.2, 4], scores["ssd"][1.1, 4])
    holm = metrics.holm([p1["p_value"], p2["p_value"]])
    for c, name, adjusted in ((p1, "P1", holm[0]), (p2, "P2", holm[1])):
        row = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
        assert f"{100 * c['mean_diff']:+.1f} [{100 * c['ci_lo']:+.1f}, {100 * c['ci_hi']:+.1f}]" in row
        assert row.endswith(f"| {c['p_value']:.3g} | {adjusted:.3g} |")
    assert "pass@k for every k" in md
    base = json.loads((root / "eval-base" / "summary.json").read_text())["temperatures"]["0.70"]
    assert base["ks"] == [1, 2, 3, 4]
    k3 = base["pass@3"]["all"]
    row = next(
        line for line in md.splitlines() if line.startswith("| 3 |")
    )  # the k = 3 row, which cfg.ks does not ask for
    assert f"{100 * k3['mean']:.1f} [{100 * k3['ci_lo']:.1f}, {100 * k3['ci_hi']:.1f}]" in row


def test_a_malformed_endpoint_names_where_it_is_declared(tmp_path):
    with pytest.raises(
        benchmarks.BenchmarkError, match=r"exp.yaml: report.primary\[0\]: 'P1: ssd vs base': expected 'NAME: pass@K"
    ):
        R.primary_endpoints([("exp.yaml: report.primary[0]", "P1: ssd vs base", {"base": tmp_path, "ssd": tmp_path})])
    with pytest.raises(benchmarks.BenchmarkError, match="unknown model 'sdd'; models here: base, ssd"):
        R.primary_endpoints(
            [("exp.yaml: report.primary[0]", "P1: pass@1 sdd@0.7 vs base@0.7", {"base": tmp_path, "ssd": tmp_path})]
        )


def test_report_contents(full_report):
    root, html_path = full_report
    html, md = html_path.read_text(), (root / "report" / "report.md").read_text()
    base, ssd = (json.loads((root / f"eval-{m}" / "summary.json").read_text()) for m in ("base", "ssd"))
    compare = json.loads((root / "compare.json").read_text())
    for doc in (html, md):
        for s in (base, ssd):  # headline numbers are the summaries' dev-chosen test scores, as written
            sel = s["selection"]["pass@1"]
            assert (
                f"{100 * sel['test_score']:.1f} [{100 * sel['test_ci_lo']:.1f}, "
                f"{100 * sel['test_ci_hi']:.1f}] at T={sel['best_T']:g}" in doc
            )
        assert f"{100 * compare['test']['mean_diff']:+.1f}" in doc
        for setting in compare[
            "base_settings"
        ].values():  # the base model three ways: recommended, dev-chosen, optimistic
            if isinstance(setting, dict):
                test, every = setting["test"], setting["all"]
                assert f"{100 * test['mean']:.1f} [{100 * test['ci_lo']:.1f}, {100 * test['ci_hi']:.1f}]" in doc
                assert f"{100 * every['mean']:.1f} [{100 * every['ci_lo']:.1f}, {100 * every['ci_hi']:.1f}]" in doc
        assert "its recommended decoding (paper Table 4) | 0.6 | none / 0.95" in md
        assert "smoke-level signal" in doc
        for heading in (
            "pass@k against T_eval",
            "By difficulty",
            "Sample lengths",
            "paper Figure 6",
            "Example replies",
            "Stage wall times",
        ):
            assert heading in doc
        assert "Not run" not in doc and "Could not be rendered" not in doc
        assert "easy" in doc or "medium" in doc or "hard" in doc
    # self-contained: every image inline, no external references
    assert (
        len(re.findall(r'src="data:image/png;base64,', html)) == 7
    )  # pass@k sweep, lengths, loss and the four Figure 6 panels
    assert not re.search(r'(src|href)="(?!data:)', html)
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):  # the Markdown twin links files beside it
        assert (root / "report" / name).is_file()


def test_base_settings_side_by_side(full_report):
    """The base model three ways: its recommended decoding, the T_eval chosen on dev (scored on test),
    and the T_eval best on all problems (optimistic)."""
    root, _ = full_report
    base = json.loads((root / "eval-base" / "summary.json").read_text())
    settings = json.loads((root / "compare.json").read_text())["base_settings"]
    all_scores = {e["temperature"]: e["pass@1"]["all"]["mean"] for e in base["temperatures"].values()}
    assert settings["metric"] == "pass@1" and set(settings) == {"metric", "recommended", "dev_chosen", "optimistic"}
    assert (settings["recommended"]["T"], settings["recommended"]["top_k"], settings["recommended"]["top_p"]) == (
        0.6,
        0,
        0.95,
    )
    assert settings["dev_chosen"]["T"] == base["selection"]["pass@1"]["best_T"]
    assert settings["optimistic"]["all"]["mean"] == max(all_scores.values())
    assert settings["optimistic"]["T"] == min(T for T, m in all_scores.items() if m == max(all_scores.values()))


def test_partial_run_says_not_run(tiny_model, tmp_path):
    root = build_run(tmp_path / "run", tiny_model, parts=("samples",))
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["stages"]["samples"]  # as if `ssd run` was interrupted before recording it
    (root / "manifest.json").write_text(json.dumps(manifest))
    html = report(root).read_text()
    assert html.count("Not run") >= 5 and "Sample lengths" in html
    assert "first start to finish, from its manifest" in html  # no time recorded by `ssd run` for it
    shutil.rmtree(root / "samples-0123456789")
    (root / "samples").unlink()
    (root / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="holds no `ssd run` output"):  # not an empty page
        report(root)


def test_report_renders_in_chromium(full_report, tmp_path):
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if chromium is None:
        pytest.skip(
            "no headless browser: install chromium (Debian: apt-get install -y chromium) "
            "to check that the report renders"
        )
    root, html_path = full_report
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1280,2400",
            html_path.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    ink = (pixels < 0.9).any(axis=-1).mean()  # share of pixels that are not (near) white
    assert pixels.shape[0] >= 2000 and 0.02 < ink < 0.9, f"blank or broken render: {ink:.3f} of the page is ink"
    assert np.unique(pixels.reshape(-1, 3), axis=0).shape[0] > 50  # text, plots and colours, not a flat page
    shutil.copy(shot, root / "report" / "screenshot.png")


def test_distillation_fit_section(tiny_model, tmp_path):
    """`ssd analyze fit` rows in TRAIN_DIR/fit are shown as the report's fit table and curve."""
    import numpy as np

    from selfdistill.fit import plot, summarize, write_row

    root = build_run(tmp_path / "run", tiny_model, parts=("train",))
    fit_dir = root / "train-0123456789" / "fit"
    fit_dir.mkdir()
    target = {
        "support_len": np.array([1, 3, 5, 1]),
        "target_entropy": np.array([0.0, 1.0, 1.5, 0.0]),
        "reply": np.array([0, 0, 1, 1]),
    }
    for step, tail in ((0, 0.5), (20, 0.25)):
        scores = {
            "tail": np.full(4, tail),
            "within_kl": np.array([0.0, 0.1, 0.3, 0.0]),
            "entropy": np.array([0.0, 0.8, 1.2, 0.0]),
            "tv": np.full(4, 0.1),
        }
        rows = write_row(fit_dir, summarize(step, "m", scores, target, heldout_replies=1))
    plot(rows, fit_dir / "fit.png")
    report(root)
    md = (root / "report" / "report.md").read_text()
    assert "Distillation fit: has the model learned the SSD target?" in md and (root / "report" / "fit.png").is_file()
    assert (
        "| 20 | heldout | fork | 1 | 0.350 | 0.250 | 0.100 | 0.800 | 1.000 | 0.100 |" in md
    )  # the held-out reply's one fork
    assert "| 20 | train | fork | 1 | 0.550 | 0.250 | 0.300 | 1.200 | 1.500 | 0.100 |" in md


def test_figure6_section_shows_the_three_fork_classifications(tmp_path):
    """The paired fork differences under the three classifications, from analysis.json as written; an
    analysis.json from before them (experiment 1's) still renders, without that table."""
    from test_analyze import SYNTHETIC_CFG, synthetic_positions

    from selfdistill.analyze import summarize
    from selfdistill.report import Run, render_markdown, section_fig6

    root = tmp_path / "run"
    root.mkdir()
    analysis = _stage(root, "analysis", "analyze", SYNTHETIC_CFG)
    a = summarize(
        synthetic_positions([[(4, 1, 1.0, 0.2), (1, 4, 0.2, 1.0), (4, 4, 0.9, 0.7), (4, 4, 0.7, 0.9)]] * 3),
        SYNTHETIC_CFG,
    )
    atomic_write_json(analysis.path / "analysis.json", a)
    md = render_markdown(section_fig6(Run.load(root), tmp_path), "t")
    assert "| both models (symmetric) | 1 | 6 | 0.800 | 0.800 | +0.000 [+0.000, +0.000] |" in md
    assert "| the base model | 1 | 9 | 0.867 | 0.600 | -0.267 [-0.267, -0.267] |" in md
    assert "1000 resamples of the 3 replies" in md and "regression to the mean" in md
    old = {k: v for k, v in a.items() if k not in ("fork_rules", "fair_rule", "bootstrap", "paired_entropy")}
    atomic_write_json(analysis.path / "analysis.json", old)
    md = render_markdown(section_fig6(Run.load(root), tmp_path), "t")
    assert (
        "| 1 | 0.200 | 1.000 | 0.867 | 0.600 |" in md and "symmetric" not in md
    )  # B, the base lock: SSD spread there
