"""`ssd run` and `ssd sweep` derive stage configs from the run config, without engines: the samples
are decontaminated against the evaluated benchmark data; the base model is also evaluated at its
recommended decoding where the config names one."""

import json
from pathlib import Path
from types import SimpleNamespace

from selfdistill import config as C
from selfdistill.run import STAGE_WEIGHTS, StagePlan, decontaminated_against_eval, recommended_base_eval
from selfdistill.sweep import sweep_dir, t_train_variants


def test_samples_are_decontaminated_against_the_evaluated_data():
    paper = C.load_run_config("qwen3-4b-instruct-2507")
    derived = decontaminated_against_eval(paper)
    assert derived.sample.decontaminate == [*paper.sample.decontaminate, "livecodebench@2025-02-01..2025-05-31"]
    assert StagePlan.of(derived).dirs["samples"] != StagePlan.of(paper).dirs["samples"]  # a new entry, new samples
    online = decontaminated_against_eval(C.load_run_config("qwen3-4b-instruct-2507", overrides=["eval.benchmark_path=/data/lcb-v6.jsonl"]))
    assert online.sample.decontaminate[-1] == "livecodebench:/data/lcb-v6.jsonl@2025-02-01..2025-05-31"
    default = C.load_run_config("qwen2.5-coder-0.5b-instruct")  # evaluates humaneval, already an entry: nothing changes
    assert decontaminated_against_eval(default) == default
    plus = C.load_run_config("qwen2.5-coder-0.5b-instruct", overrides=["eval.benchmark=humaneval_plus"])  # HumanEval's statements: covered
    assert decontaminated_against_eval(plus) == plus
    own_file = C.load_run_config("qwen2.5-coder-0.5b-instruct", overrides=["eval.benchmark=humaneval_plus", "eval.benchmark_path=/data/he+.jsonl"])
    assert decontaminated_against_eval(own_file).sample.decontaminate[-1] == "humaneval_plus:/data/he+.jsonl"
    # a sweep's T_train variants (and `ssd report` over sweeps) find the samples `ssd run` makes
    swept = t_train_variants(C.load_run_config("qwen3-4b-instruct-2507", overrides=["sweep.t_trains=1.6"]))[1.6]
    assert StagePlan.of(swept).dirs["samples"] == StagePlan.of(derived).dirs["samples"]


def test_base_model_is_also_evaluated_at_its_recommended_decoding():
    cfg = C.load_run_config("llama-3.1-8b-instruct")  # paper Table 4: T 0.9, no top-k, top-p 0.8
    recommended = recommended_base_eval(cfg.eval)
    assert (recommended.temperatures, recommended.t_eval, recommended.top_k, recommended.top_p) == ([0.9], None, 0, 0.8)
    assert (recommended.n, recommended.benchmark, recommended.release_from) == (cfg.eval.n, cfg.eval.benchmark, cfg.eval.release_from)
    dirs = StagePlan.of(cfg).dirs
    assert dirs["eval-base-recommended"].name.startswith("eval-base-recommended-") and list(dirs)[:2] == ["samples", "train"]
    swept = StagePlan.of(C.load_run_config("llama-3.1-8b-instruct", overrides=["eval.temperatures=0.5,1.0", "eval.t_eval=null"]))
    assert swept.dirs["eval-base-recommended"] == dirs["eval-base-recommended"]  # the sweep's grid does not change it
    default = C.load_run_config("qwen2.5-coder-0.5b-instruct")  # no recommended setting: no such stage
    assert recommended_base_eval(default.eval) is None and "eval-base-recommended" not in StagePlan.of(default).dirs
    assert set(dirs) == set(STAGE_WEIGHTS)  # every stage of the run has a weight for the ETA


def test_run_wires_the_derived_stages(tmp_path, monkeypatch):
    """`ssd run` with stand-in stages: the samples carry the eval's decontamination entry, the base engine
    also serves the eval at the recommended decoding, and compare.json carries the three base numbers."""
    import selfdistill.analyze
    import selfdistill.evaluate
    import selfdistill.generate
    import selfdistill.report
    import selfdistill.sample
    import selfdistill.train
    from selfdistill.manifest import RunDir, load_manifest
    from selfdistill.run import run

    calls = []
    engine = SimpleNamespace(close=lambda: calls.append(("close", None, None)))

    def stage(kind: str):
        def fake(cfg, generator=None):
            calls.append((kind, cfg, generator))
            RunDir.open(cfg.output_dir, kind, cfg).finish(model_dir=str(tmp_path / "model"))
            return tmp_path / "model"
        return fake

    monkeypatch.setattr(selfdistill.generate, "load_generator", lambda *args, **kwargs: engine)
    for module, name in ((selfdistill.sample, "sample"), (selfdistill.evaluate, "evaluate"), (selfdistill.train, "train"), (selfdistill.analyze, "analyze")):
        monkeypatch.setattr(module, name, stage(name))
    monkeypatch.setattr(selfdistill.evaluate, "compare", lambda a, b: {"a": str(a), "b": str(b)})
    monkeypatch.setattr(selfdistill.evaluate, "base_settings", lambda sweep, recommended: {"recommended_dir": str(recommended)})
    monkeypatch.setattr(selfdistill.report, "report", lambda root: root / "report" / "report.html")
    root = run(C.load_run_config("llama-3.1-8b-instruct", overrides=[f"output_dir={tmp_path / 'run'}"]))

    assert [kind for kind, *_ in calls] == ["sample", "evaluate", "evaluate", "close", "train", "evaluate", "analyze"]
    (_, sampled, shared), (_, base, _), (_, recommended, also_shared), *_, (_, ssd, own), _ = calls
    assert sampled.decontaminate[-1] == "livecodebench@2025-02-01..2025-05-31" and shared is also_shared is engine and own is None
    assert (base.temperatures, recommended.temperatures, recommended.top_k, recommended.top_p) == ([0.3, 0.5, 0.7, 0.9, 1.1, 1.3], [0.9], 0, 0.8)
    assert recommended.model == base.model == "meta-llama/Llama-3.1-8B-Instruct" and ssd.model == str(tmp_path / "model")
    stages = load_manifest(root)["stages"]
    compare = json.loads((root / "compare.json").read_text())
    assert compare["base_settings"] == {"recommended_dir": stages["eval-base-recommended"]["dir"]}
    assert (root / "eval-base-recommended").resolve() == Path(stages["eval-base-recommended"]["dir"]).resolve()


# The experiment under experiments/ssd-qwen0.5b/ runs from these stage directories (issue 12): a change of
# a hash would orphan its samples, models and evals. Keys: StagePlan names; per config, then per T_train.
EXPERIMENT_DIRS = {
    "humaneval_plus": {
        1.6: {"samples": "samples-17800565d1", "train": "train-c9a5ab78b4", "eval-base": "eval-base-5a9437dabf", "eval-ssd": "eval-ssd-714f3a9741",
              "analysis": "analysis-e120053f7d"},
        1.0: {"samples": "samples-c1d9828177", "train": "train-f0e594bd51", "eval-base": "eval-base-5a9437dabf", "eval-ssd": "eval-ssd-291a06df19",
              "analysis": "analysis-e1609614b8"},
    },
    "mbpp": {
        1.6: {"samples": "samples-17800565d1", "train": "train-c9a5ab78b4", "eval-base": "eval-base-0b46b37a58", "eval-ssd": "eval-ssd-a903ff0dab",
              "analysis": "analysis-03c5cfcba6"},
        1.0: {"samples": "samples-c1d9828177", "train": "train-f0e594bd51", "eval-base": "eval-base-0b46b37a58", "eval-ssd": "eval-ssd-36ca6ac398",
              "analysis": "analysis-d614c10d01"},
    },
}  # fmt: skip
EXPERIMENT_SWEEPS = {("humaneval_plus", ()): "sweep-9fbc3c907f", ("mbpp", ()): "sweep-a956ddb393",
                     ("humaneval_plus", ("sweep.t_trains=[1.6]", "sweep.teff_baseline=false")): "sweep-d59fe9f900"}
EXPERIMENT_TEFF = {("humaneval_plus", 1.6, 0.8): "eval-base-4c815b93b2", ("mbpp", 1.0, 1.2): "eval-base-ab589f7f56"}


def experiment(benchmark: str, overrides=()) -> C.RunConfig:
    return C.load_run_config(config_file=str(Path(__file__).parents[1] / "experiments" / "ssd-qwen0.5b" / f"{benchmark}.yaml"), overrides=list(overrides))


def teff_eval_dir(cfg: C.RunConfig, t_train: float, t_eval: float) -> Path:
    """The base model's eval at T_eff = T_train x T_eval, as sweep._teff_baseline derives it."""
    from dataclasses import replace

    return StagePlan.of(replace(cfg, eval=replace(cfg.eval, temperatures=[round(t_train * t_eval, 2)], t_eval=None))).dirs["eval-base"]


def test_the_experiments_stage_directories_keep_their_names():
    for benchmark, by_t_train in EXPERIMENT_DIRS.items():
        cfg = experiment(benchmark)
        assert {name: d.name for name, d in StagePlan.of(decontaminated_against_eval(cfg)).dirs.items() if name != "report"} == by_t_train[1.6]  # ssd run
        for t, variant in t_train_variants(cfg).items():  # ssd sweep
            assert {name: d.name for name, d in StagePlan.of(variant).dirs.items() if name != "report"} == by_t_train[t]
            assert StagePlan.of(variant).root == Path("experiments/ssd-qwen0.5b/runs")
    for (benchmark, overrides), name in EXPERIMENT_SWEEPS.items():
        assert sweep_dir(experiment(benchmark, overrides)).name == name
    for (benchmark, t_train, t_eval), name in EXPERIMENT_TEFF.items():
        assert teff_eval_dir(experiment(benchmark), t_train, t_eval).name == name
