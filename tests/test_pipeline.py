"""`ssd run` and `ssd sweep` derive stage configs from the run config (pipeline.Stages), without engines:
the samples are decontaminated against the evaluated benchmark data; the base model is also evaluated
at its recommended decoding where the config names one; base and SSD evals differ in the model alone;
the experiment's stage directories keep their names."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from selfdistill import config as C
from selfdistill.engine import EngineSettings
from selfdistill.pipeline import (
    StagePlan,
    Stages,
    decontaminated_against_eval,
    recommended_base_eval,
    run,
    sweep,
    sweep_dir,
    t_train_variants,
    teff_base_eval,
)
from selfdistill.stages import OUTPUTS, stage_of


def test_run_refuses_before_any_stage_when_the_evaluated_data_cannot_be_read(tmp_path, monkeypatch):
    """Offline, without a hub cache or a local copy, the paper presets' LiveCodeBench cannot load: refused
    in seconds, before sampling (decontamination alone would only skip it)."""
    from huggingface_hub import constants

    from selfdistill.benchmarks import DataUnavailable

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("SELFDISTILL_DATA", str(tmp_path / "no-data"))
    cfg = C.load_run_config("qwen3-4b-instruct-2507", overrides=[f"output_dir={tmp_path / 'run'}"])
    for stage in (run, sweep):
        with pytest.raises(DataUnavailable, match="livecodebench/code_generation_lite: cannot fetch"):
            stage(cfg)
    assert not (tmp_path / "run").exists()


def test_samples_are_decontaminated_against_the_evaluated_data():
    paper = C.load_run_config("qwen3-4b-instruct-2507")
    derived = decontaminated_against_eval(paper)
    assert derived.sample.decontaminate == [*paper.sample.decontaminate, "livecodebench@2025-02-01..2025-05-31"]
    assert StagePlan.of(derived).dirs["samples"] != StagePlan.of(paper).dirs["samples"]  # a new entry, new samples
    online = decontaminated_against_eval(
        C.load_run_config("qwen3-4b-instruct-2507", overrides=["eval.benchmark_path=/data/lcb-v6.jsonl"])
    )
    assert online.sample.decontaminate[-1] == "livecodebench:/data/lcb-v6.jsonl@2025-02-01..2025-05-31"
    default = C.load_run_config(
        "qwen2.5-coder-0.5b-instruct"
    )  # evaluates humaneval, already an entry: nothing changes
    assert decontaminated_against_eval(default) == default
    plus = C.load_run_config(
        "qwen2.5-coder-0.5b-instruct", overrides=["eval.benchmark=humaneval_plus"]
    )  # HumanEval's statements: covered
    assert decontaminated_against_eval(plus) == plus
    own_file = C.load_run_config(
        "qwen2.5-coder-0.5b-instruct",
        overrides=["eval.benchmark=humaneval_plus", "eval.benchmark_path=/data/he+.jsonl"],
    )
    assert decontaminated_against_eval(own_file).sample.decontaminate[-1] == "humaneval_plus:/data/he+.jsonl"
    # a sweep's T_train variants (and `ssd report` over sweeps) find the samples `ssd run` makes
    swept = t_train_variants(C.load_run_config("qwen3-4b-instruct-2507", overrides=["sweep.t_trains=1.6"]))[1.6]
    assert StagePlan.of(swept).dirs["samples"] == StagePlan.of(derived).dirs["samples"]


def test_base_model_is_also_evaluated_at_its_recommended_decoding():
    cfg = C.load_run_config("llama-3.1-8b-instruct")  # paper Table 4: T 0.9, no top-k, top-p 0.8
    recommended = recommended_base_eval(cfg.eval)
    assert (recommended.temperatures, recommended.t_eval, recommended.top_k, recommended.top_p) == (
        [0.9],
        None,
        0,
        0.8,
    )
    assert (recommended.n, recommended.benchmark, recommended.release_from) == (
        cfg.eval.n,
        cfg.eval.benchmark,
        cfg.eval.release_from,
    )
    dirs = StagePlan.of(cfg).dirs
    assert dirs["eval-base-recommended"].name.startswith("eval-base-recommended-") and list(dirs)[:2] == [
        "samples",
        "train",
    ]
    swept = StagePlan.of(
        C.load_run_config("llama-3.1-8b-instruct", overrides=["eval.temperatures=0.5,1.0", "eval.t_eval=null"])
    )
    assert swept.dirs["eval-base-recommended"] == dirs["eval-base-recommended"]  # the sweep's grid does not change it
    default = C.load_run_config("qwen2.5-coder-0.5b-instruct")  # no recommended setting: no such stage
    assert recommended_base_eval(default.eval) is None and "eval-base-recommended" not in StagePlan.of(default).dirs
    assert set(dirs) == set(OUTPUTS)  # every output of the stage table has its directory


@pytest.fixture
def calls(tmp_path, monkeypatch) -> list:
    """Stand-in stages, engines and grid for `ssd run` and `ssd sweep`: the calls they get, in order, as
    (stage, config, generator), ("load", EngineSettings, engine) and ("close", engine, None)."""
    import selfdistill.analyze
    import selfdistill.evaluate
    import selfdistill.generate
    import selfdistill.grid
    import selfdistill.report
    import selfdistill.results
    import selfdistill.sample
    import selfdistill.train
    from selfdistill.manifest import RunDir

    calls = []

    class Engine:
        def __init__(self, model: str):
            self.model = model

        def close(self):
            calls.append(("close", self, None))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    def load_generator(
        model, **settings
    ):  # an engine in this process: ray_address and local_replicas are None in these configs
        calls.append(("load", EngineSettings(**settings, ray_address=None, local_replicas=None), Engine(model)))
        return calls[-1][2]

    def stage(kind: str):
        def fake(cfg, generator=None):
            calls.append((kind, cfg, generator))
            run, model = RunDir.open(cfg.output_dir, stage_of(cfg).name, cfg), Path(cfg.output_dir) / "model"
            if kind == "train":  # a bf16 export: the evals keep the config's precision (pipeline.exported_dtype)
                model.mkdir()
                (model / "config.json").write_text(json.dumps({"model_type": "llama", "dtype": "bfloat16"}))
            run.finish(model_dir=str(model))

        return fake

    def grid(cfg, base_dir, recommended_dir, ssd_dirs):  # SSD's best cell: the highest T_train at the lowest T_eval
        return {
            "cells": [
                {"t_train": t, "t_eval": te, "t_eff": t * te, "score": t - te}
                for t in cfg.sweep.t_trains
                for te in cfg.sweep.t_evals
            ]
        }

    monkeypatch.setattr(selfdistill.generate, "load_generator", load_generator)
    for module, name in (
        (selfdistill.sample, "sample"),
        (selfdistill.evaluate, "evaluate"),
        (selfdistill.train, "train"),
        (selfdistill.analyze, "analyze"),
    ):
        monkeypatch.setattr(module, name, stage(name))
    monkeypatch.setattr(selfdistill.results, "compare", lambda a, b: {"a": str(a), "b": str(b)})
    monkeypatch.setattr(
        selfdistill.results, "base_settings", lambda sweep, recommended: {"recommended_dir": str(recommended)}
    )
    monkeypatch.setattr(selfdistill.report, "report", lambda root: root / "report" / "report.html")
    monkeypatch.setattr(selfdistill.grid, "grid", grid)
    monkeypatch.setattr(selfdistill.grid, "plot", lambda grid, out: None)
    monkeypatch.setattr(selfdistill.grid, "print_grid", lambda grid: None)
    return calls


# The serving precision known before training (the export's dtype is the base model's), so the base model's
# evals share the sampler's engine; with export_dtype auto they wait for the export (test below).
PRECISION_KNOWN = "train.export_dtype=base"


def kinds(calls: list) -> list[str]:
    return [kind for kind, *_ in calls]


def test_run_wires_the_derived_stages(tmp_path, calls):
    """The samples carry the eval's decontamination entry, one engine serves every base-model stage (their
    engine settings agree), and compare.json carries the three base numbers."""
    from selfdistill.manifest import load_manifest

    cfg = C.load_run_config("llama-3.1-8b-instruct", overrides=[f"output_dir={tmp_path / 'run'}", PRECISION_KNOWN])
    root = run(cfg)
    assert kinds(calls) == ["load", "sample", "evaluate", "evaluate", "close", "train", "evaluate", "analyze"]
    (
        (_, _, engine),
        (_, sampled, shared),
        (_, base, _),
        (_, recommended, also_shared),
        *_,
        (_, ssd, own),
        (_, analyzed, _),
    ) = calls
    assert (
        sampled.decontaminate[-1] == "livecodebench@2025-02-01..2025-05-31"
        and shared is also_shared is engine
        and own is None
    )
    assert (base.temperatures, recommended.temperatures, recommended.top_k, recommended.top_p) == (
        [0.3, 0.5, 0.7, 0.9, 1.1, 1.3],
        [0.9],
        0,
        0.8,
    )
    d = Stages.of(cfg).dirs
    assert (
        recommended.model == base.model == engine.model == "meta-llama/Llama-3.1-8B-Instruct"
        and ssd.model == analyzed.ssd_model == str(d["train"] / "model")
    )
    stages = load_manifest(root)["stages"]
    compare = json.loads((root / "compare.json").read_text())
    assert compare["base_settings"] == {"recommended_dir": stages["eval-base-recommended"]["dir"]}
    assert (root / "eval-base-recommended").resolve() == Path(stages["eval-base-recommended"]["dir"]).resolve()
    calls.clear()
    run(cfg)
    assert calls == []  # a rerun: every stage finished, no engine started


ENGINE_APART = [
    "sample.backend=hf",
    "sample.seed=3",
    "sample.max_tokens=4096",
    "sample.max_model_len=8192",
    "eval.tensor_parallel_size=2",
]


def test_with_the_export_check_deciding_the_precision_the_base_evals_follow_training(tmp_path, calls):
    """export_dtype auto: the base model's evals wait for the export's dtype (a bf16 export here), on an
    engine of their own after training."""
    run(C.load_run_config("llama-3.1-8b-instruct", overrides=[f"output_dir={tmp_path / 'run'}"]))
    assert kinds(calls) == [
        "load",
        "sample",
        "close",
        "train",
        "load",
        "evaluate",
        "evaluate",
        "close",
        "evaluate",
        "analyze",
    ]


def test_base_model_stages_of_other_engine_settings_get_their_own_engine(tmp_path, calls):
    """The base model's evals run on an engine of the eval section's settings, the SSD model's eval loads
    the same settings, and the samples get the sample section's."""
    run(
        C.load_run_config(
            "llama-3.1-8b-instruct", overrides=[*ENGINE_APART, f"output_dir={tmp_path}", PRECISION_KNOWN]
        )
    )
    assert kinds(calls) == [
        "load",
        "sample",
        "close",
        "load",
        "evaluate",
        "evaluate",
        "close",
        "train",
        "evaluate",
        "analyze",
    ]
    (_, sample_engine, a), (_, _, on_a), _, (_, eval_engine, b), (_, base, on_b), (_, _, also_on_b) = calls[:6]
    assert on_a is a and on_b is also_on_b is b
    assert sample_engine == EngineSettings("hf", 8192, 1, 3, None, None, None) and eval_engine == EngineSettings(
        "vllm", 69632, 2, 0, None, None, None
    )
    *_, (_, ssd, own), _ = calls
    assert "/eval-ssd-" in ssd.output_dir and own is None  # evaluate loads its own engine, from its config:
    assert EngineSettings.of(ssd) == EngineSettings.of(base) == eval_engine


def test_sweep_shares_one_engine_for_the_samples_and_the_base_row_then_trains_each_t_train(tmp_path, calls):
    """Every T_train's samples and the base model's evals on one engine; one model and one SSD eval per
    T_train, as `ssd run` derives them; the base model at T_eff of the best cell; the manifest records
    where each stage wrote; a rerun redoes nothing."""
    from selfdistill.manifest import load_manifest

    cfg = C.load_run_config(
        "llama-3.1-8b-instruct",
        overrides=[f"output_dir={tmp_path}", "sweep.t_trains=[0.8,1.6]", "sweep.t_evals=[0.5,1.0]", PRECISION_KNOWN],
    )
    out = sweep(cfg)
    assert kinds(calls) == [
        "load",
        "sample",
        "sample",
        "evaluate",
        "evaluate",
        "close",
        "train",
        "evaluate",
        "train",
        "evaluate",
        "evaluate",
    ]
    variants = {t: Stages.of(v) for t, v in t_train_variants(cfg).items()}
    assert [c.temperature for _, c, _ in calls[1:3]] == [0.8, 1.6] and calls[3][1] == variants[0.8].eval_base()
    assert calls[4][1] == replace(
        recommended_base_eval(variants[0.8].cfg.eval),
        model=cfg.model,
        output_dir=str(variants[0.8].dirs["eval-base-recommended"]),
    )
    for (_, trained, _), (_, ssd, own), t in ((calls[6], calls[7], 0.8), (calls[8], calls[9], 1.6)):
        assert (
            trained == variants[t].train()
            and ssd == variants[t].eval_ssd(variants[t].dirs["train"] / "model")
            and own is None
        )
    grid = json.loads((out / "grid.json").read_text())
    assert (
        grid["teff_baseline"]["t_eff"] == 0.8
        and calls[10][1] == teff_base_eval(cfg, 0.8)
        and calls[10][1].temperatures == [0.8]
    )
    assert grid["teff_baseline"]["ssd_eval_dir"] == str(variants[1.6].dirs["eval-ssd"])
    recorded = load_manifest(out)["stages"]  # for `ssd report CONFIG.yaml`: where each stage above wrote
    assert [recorded[str(t)]["samples"] for t in (0.8, 1.6)] == [c.output_dir for _, c, _ in calls[1:3]]
    assert {recorded[str(t)]["eval-base"] for t in (0.8, 1.6)} == {calls[3][1].output_dir}
    assert {recorded[str(t)]["eval-base-recommended"] for t in (0.8, 1.6)} == {calls[4][1].output_dir}
    assert [(recorded[str(t)]["train"], recorded[str(t)]["eval-ssd"]) for t in (0.8, 1.6)] == [
        (trained.output_dir, ssd.output_dir) for (_, trained, _), (_, ssd, _) in (calls[6:8], calls[8:10])
    ]
    calls.clear()
    sweep(cfg)
    assert calls == []


CONFIGS = [(p, []) for p in C.preset_names()] + [
    ("llama-3.1-8b-instruct", ENGINE_APART),
    ("humaneval_plus", []),
    ("mbpp", []),
]


@pytest.mark.parametrize(("name", "overrides"), CONFIGS)
def test_base_and_ssd_evals_differ_in_the_model_alone(name, overrides):
    """Same decoding and same engine, by construction: for `ssd run` and every T_train of `ssd sweep`."""
    cfg = experiment(name, overrides) if name in EXPERIMENT_DIRS else C.load_run_config(name, overrides=overrides)
    for stages in [Stages.of(cfg), *map(Stages.of, t_train_variants(cfg).values())]:
        base, ssd = stages.eval_base(), stages.eval_ssd(stages.dirs["train"] / "model")
        assert base.model == cfg.model and ssd.model == str(stages.dirs["train"] / "model")
        assert replace(ssd, model=base.model, output_dir=base.output_dir) == base
        assert EngineSettings.of(base) == EngineSettings.of(ssd) == EngineSettings.of(cfg.eval)
        for _, other in stages.base_evals()[1:]:  # the recommended decoding: other truncation, the same engine
            assert EngineSettings.of(other) == EngineSettings.of(base)
    if overrides == ENGINE_APART:
        assert EngineSettings.of(Stages.of(cfg).sample()) != EngineSettings.of(Stages.of(cfg).eval_base())


# The experiment under experiments/ssd-qwen0.5b/ runs from these stage directories (issue 12): a change of
# a hash would orphan its samples, models and evals. Keys: StagePlan names; per config, then per T_train.
EXPERIMENT_DIRS = {
    "humaneval_plus": {
        1.6: {"samples": "samples-17800565d1", "train": "train-c9a5ab78b4", "eval-base": "eval-base-5a9437dabf",
              "eval-ssd": "eval-ssd-714f3a9741", "analysis": "analysis-e120053f7d"},
        1.0: {"samples": "samples-c1d9828177", "train": "train-f0e594bd51", "eval-base": "eval-base-5a9437dabf",
              "eval-ssd": "eval-ssd-291a06df19", "analysis": "analysis-e1609614b8"},
    },
    "mbpp": {
        1.6: {"samples": "samples-17800565d1", "train": "train-c9a5ab78b4", "eval-base": "eval-base-0b46b37a58",
              "eval-ssd": "eval-ssd-a903ff0dab", "analysis": "analysis-03c5cfcba6"},
        1.0: {"samples": "samples-c1d9828177", "train": "train-f0e594bd51", "eval-base": "eval-base-0b46b37a58",
              "eval-ssd": "eval-ssd-36ca6ac398", "analysis": "analysis-d614c10d01"},
    },
}  # fmt: skip
EXPERIMENT_SWEEPS = {
    ("humaneval_plus", ()): "sweep-9fbc3c907f",
    ("mbpp", ()): "sweep-a956ddb393",
    ("humaneval_plus", ("sweep.t_trains=[1.6]", "sweep.teff_baseline=false")): "sweep-d59fe9f900",
}
EXPERIMENT_TEFF = {("humaneval_plus", 1.6, 0.8): "eval-base-4c815b93b2", ("mbpp", 1.0, 1.2): "eval-base-ab589f7f56"}


def experiment(benchmark: str, overrides=()) -> C.RunConfig:
    return C.load_run_config(
        config_file=str(Path(__file__).parents[1] / "experiments" / "ssd-qwen0.5b" / f"{benchmark}.yaml"),
        overrides=list(overrides),
    )


def test_the_experiments_stage_directories_keep_their_names():
    for benchmark, by_t_train in EXPERIMENT_DIRS.items():
        cfg = experiment(benchmark)
        assert {
            name: d.name for name, d in StagePlan.of(decontaminated_against_eval(cfg)).dirs.items() if name != "report"
        } == by_t_train[1.6]  # ssd run
        for t, variant in t_train_variants(cfg).items():  # ssd sweep
            assert {name: d.name for name, d in StagePlan.of(variant).dirs.items() if name != "report"} == by_t_train[
                t
            ]
            assert StagePlan.of(variant).root == Path("experiments/ssd-qwen0.5b/runs")
    for (benchmark, overrides), name in EXPERIMENT_SWEEPS.items():
        assert sweep_dir(experiment(benchmark, overrides)).name == name
    for (benchmark, t_train, t_eval), name in EXPERIMENT_TEFF.items():
        assert Path(teff_base_eval(experiment(benchmark), round(t_train * t_eval, 2)).output_dir).name == name


# `ssd run`'s stage directories as computed before the stage table (issue 27): the same names and hashes,
# so finished stages stay found. The default preset, a paper preset (with the recommended decoding) and
# experiment 2, whose samples are being drawn.
RUN_DIRS = {
    "qwen2.5-coder-0.5b-instruct": {"samples": "samples-9d09e4bc62", "train": "train-25c5190dc8",
                                    "eval-base": "eval-base-9665dd1151", "eval-ssd": "eval-ssd-3f239646f7",
                                    "analysis": "analysis-380534d16e", "report": "report"},
    "llama-3.1-8b-instruct": {"samples": "samples-b48e790469", "train": "train-116fb318a3",
                              "eval-base": "eval-base-0df01a90d4",
                              "eval-base-recommended": "eval-base-recommended-48b8f04c2b",
                              "eval-ssd": "eval-ssd-1ca3e1156d", "analysis": "analysis-5dd521c47f",
                              "report": "report"},
    "experiments/ssd-qwen0.5b-full/leetcode.yaml": {"samples": "samples-d5198507ee", "train": "train-62eed3ce1f",
                                                    "eval-base": "eval-base-5568c68d00",  # eval.timeout 40
                                                    "eval-ssd": "eval-ssd-31fa4acc71",  # set by the oracle
                                                    "analysis": "analysis-467e07f88a", "report": "report"},
}  # fmt: skip


@pytest.mark.parametrize("source", list(RUN_DIRS))
def test_run_stage_directories_keep_their_names_and_hashes(source):
    if source.endswith(".yaml"):
        cfg = C.load_run_config(config_file=str(Path(__file__).parents[1] / source))
        root = Path("experiments/ssd-qwen0.5b-full/runs")
    else:
        cfg = C.load_run_config(source)
        root = Path("runs") / source
    dirs = Stages.of(cfg).dirs
    assert {name: d.name for name, d in dirs.items()} == RUN_DIRS[source]
    assert {d.parent for d in dirs.values()} == {root}


# ---------------------------------------- serving precision: the base model's follows the SSD export's


def finish_training(stages: Stages, dtype: str, tiny_model: str) -> None:
    """A finished train directory whose model was exported in `dtype` (its config.json says so)."""
    from selfdistill.manifest import RunDir

    run = RunDir.open(stages.dirs["train"], "train", stages.train())
    model = stages.dirs["train"] / "model"
    model.mkdir()
    config = json.loads((Path(tiny_model) / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "dtype": dtype}))
    run.finish(model_dir=str(model))


@pytest.mark.parametrize(("export", "served"), [("float32", "float32"), ("bfloat16", "auto")])
def test_a_float32_export_serves_both_models_in_float32(tmp_path, tiny_model, export, served):
    """A full fine-tune with export_dtype auto: until it finishes, the evals wait (their precision is the
    export's); a float32 export then serves base and SSD in float32 from one eval config, in directories
    of their own; a bf16 export leaves the evals as configured. The sweep's T_trains share the decision."""
    cfg = C.load_run_config("smollm2-135m-instruct", overrides=[f"output_dir={tmp_path}"])
    assert not cfg.train.use_lora and cfg.train.export_dtype == "auto"
    waiting = Stages.of(cfg)
    assert waiting.evals_wait_for_training and waiting.cfg.eval.dtype == "auto"
    finish_training(waiting, export, tiny_model)
    matched = Stages.of(cfg)
    assert not matched.evals_wait_for_training and matched.dirs["train"] == waiting.dirs["train"]
    base, ssd = matched.eval_base(), matched.eval_ssd(matched.dirs["train"] / "model")
    assert base.dtype == ssd.dtype == served and replace(ssd, model=base.model, output_dir=base.output_dir) == base
    changed = served != cfg.eval.dtype
    assert (matched.dirs["eval-base"] != waiting.dirs["eval-base"]) == changed
    assert (matched.dirs["eval-ssd"] != waiting.dirs["eval-ssd"]) == changed
    assert EngineSettings.of(base).dtype == EngineSettings.of(ssd).dtype == served  # what the engine is started with
    variants = t_train_variants(cfg)
    assert len(variants) > 1 and {v.eval.dtype for v in variants.values()} == {served}
    assert teff_base_eval(cfg, 1.0).dtype == served


@pytest.mark.parametrize(
    ("overrides", "served"),
    [([], "auto"), (["train.use_lora=true", "train.export_dtype=float32"], "auto"),
     (["train.export_dtype=float32"], "float32"), (["eval.dtype=float32"], "float32"),
     (["train.export_dtype=base"], "auto")],
)  # fmt: skip
def test_the_evals_precision_is_known_before_training_unless_the_export_check_decides_it(tmp_path, overrides, served):
    preset = "qwen2.5-coder-0.5b-instruct" if not overrides else "smollm2-135m-instruct"  # the first: LoRA
    stages = Stages.of(C.load_run_config(preset, overrides=[f"output_dir={tmp_path}", *overrides]))
    assert not stages.evals_wait_for_training
    assert stages.eval_base().dtype == stages.eval_ssd("m").dtype == served


def test_soft_training_in_a_run_uses_the_runs_samples_once_their_targets_are_recomputed(tmp_path):
    """`ssd run train.objective=soft` samples anew with store_targets, unless the hard run's samples have
    their distributions recomputed by `ssd samples targets` (targets.json finished): then it trains on them."""
    from selfdistill.manifest import RunDir, atomic_write_json
    from selfdistill.sample import RECOMPUTED_TARGETS

    hard = Stages.of(C.load_run_config("smollm2-135m-instruct", overrides=[f"output_dir={tmp_path}"]))
    soft_cfg = C.load_run_config("smollm2-135m-instruct", overrides=[f"output_dir={tmp_path}", "train.objective=soft"])
    assert Stages.of(soft_cfg).dirs["samples"] != hard.dirs["samples"]
    RunDir.open(hard.dirs["samples"], "sample", hard.sample()).finish(counts={"samples": 0})
    assert Stages.of(soft_cfg).dirs["samples"] != hard.dirs["samples"]  # no targets yet
    atomic_write_json(hard.dirs["samples"] / RECOMPUTED_TARGETS, {"source": "teacher forcing", "finished_at": "now"})
    soft = Stages.of(soft_cfg)
    assert soft.dirs["samples"] == hard.dirs["samples"] and not soft.sample().store_targets
    assert soft.dirs["train"] != hard.dirs["train"] and soft.train().objective == "soft"
