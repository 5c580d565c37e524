import dataclasses
import re
import typing
from pathlib import Path

import pytest

from selfdistill import config as C
from selfdistill.cli import flags_to_overrides


def test_paper_preset_resolves_table3_settings():
    cfg = C.load_run_config("qwen3-30b-a3b-instruct")
    assert (cfg.sample.temperature, cfg.sample.top_k, cfg.sample.top_p) == (1.6, 20, 0.8)
    assert cfg.eval.t_eval == 0.9
    assert cfg.sample.model == cfg.train.model == cfg.eval.model == "Qwen/Qwen3-30B-A3B-Instruct-2507"
    assert cfg.train.adam_beta2 == 0.95 and cfg.train.weight_decay == 0.1 and cfg.train.global_batch_size == 32


PAPER_PRESETS = {
    "llama-3.1-8b-instruct": "instruct",
    "qwen3-4b-instruct-2507": "instruct",
    "qwen3-30b-a3b-instruct": "instruct",
    "qwen3-4b-thinking-2507": "thinking",
    "qwen3-30b-a3b-thinking": "thinking",
    "gpt-oss-20b": "thinking",
}
TABLE4 = {
    "llama-3.1-8b-instruct": (0.9, 0, 0.8),
    "qwen3-4b-instruct-2507": (0.7, 20, 0.8),
    "qwen3-4b-thinking-2507": (0.6, 20, 0.95),
    "qwen3-30b-a3b-instruct": (0.7, 20, 0.8),
    "qwen3-30b-a3b-thinking": (0.6, 20, 0.95),
    "gpt-oss-20b": (1.0, 0, 1.0),
}  # T, top-k, top-p


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_follow_the_paper(name):
    cfg = C.load_run_config(name)
    steps = {"instruct": (2500, 250), "thinking": (300, 50)}[PAPER_PRESETS[name]]
    assert (cfg.train.max_steps, cfg.train.warmup_steps, cfg.train.global_batch_size) == (*steps, 32)
    assert (cfg.sample.prompts, cfg.sample.prompt_selection) == ("rstar-coder-seed-sft", "paper")
    assert cfg.sample.max_tokens == cfg.eval.max_tokens == 65536 and cfg.sample.max_model_len >= 65536 + 4096
    assert cfg.eval.prompt_format == cfg.eval.grading == "lcb"
    assert (cfg.eval.base_temperature, cfg.eval.base_top_k, cfg.eval.base_top_p) == TABLE4[name]


@pytest.mark.parametrize("name", C.preset_names())
def test_every_preset_loads(name):
    cfg = C.load_run_config(name)
    assert cfg.sample.temperature > 0 and cfg.eval.temperatures


def test_gpt_oss_samples_untruncated_and_evaluates_truncated():
    cfg = C.load_run_config("gpt-oss-20b")
    assert (cfg.sample.top_k, cfg.sample.top_p) == (0, 1.0)
    assert (
        cfg.sample.reasoning_effort == cfg.eval.reasoning_effort == "high"
        and cfg.sample.chat_date == cfg.eval.chat_date == C.CHAT_DATE
    )
    assert (cfg.eval.top_k, cfg.eval.top_p, cfg.eval.t_eval) == (20, 0.95, 1.0)


def test_overrides_are_typed_and_dotted():
    cfg = C.load_run_config(
        "qwen2.5-coder-0.5b-instruct",
        overrides=["sample.temperature=1.2", "eval.temperatures=0.2,0.4", "train.use_lora=false", "model=some/hub-id"],
    )
    assert cfg.sample.temperature == 1.2 and cfg.eval.temperatures == [0.2, 0.4] and cfg.train.use_lora is False
    assert cfg.model == cfg.sample.model == cfg.eval.model == "some/hub-id"


def test_stage_overrides_are_relative_to_the_section():
    cfg = C.load_stage_config(
        C.SampleConfig, "qwen2.5-coder-0.5b-instruct", overrides=["top_k=5", "model=tiny-random"]
    )
    assert cfg.top_k == 5 and cfg.model == "tiny-random"


def test_unknown_key_names_key_and_suggests():
    with pytest.raises(C.ConfigError, match=r"unknown key 'sample.temprature'.*'sample.temperature'"):
        C.load_run_config(overrides=["sample.temprature=1"])


def test_wrong_type_names_the_field():
    with pytest.raises(C.ConfigError, match=r"sample.top_k: expected an integer"):
        C.load_run_config(overrides=["sample.top_k=abc"])
    with pytest.raises(C.ConfigError, match=r"train.use_lora: expected true or false"):
        C.load_run_config(overrides=["train.use_lora=3"])


def test_yaml_errors_name_file_and_line(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("model: tiny-random\nsample:\n  temperature: 1.0\n  top_q: 0.9\n")
    with pytest.raises(C.ConfigError, match=rf"{f}:4: unknown key 'sample.top_q'"):
        C.load_run_config(config_file=str(f))
    f.write_text("sample: [1, 2]\n")
    with pytest.raises(C.ConfigError, match="is a section"):
        C.load_run_config(config_file=str(f))
    f.write_text("sample:\n  top_k: [20\n")
    with pytest.raises(C.ConfigError, match="invalid YAML"):
        C.load_run_config(config_file=str(f))


def test_config_file_layers_over_preset(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("sample:\n  limit: 3\n")
    cfg = C.load_run_config("smollm2-135m-instruct", str(f), ["sample.seed=7"])
    assert (cfg.sample.limit, cfg.sample.seed, cfg.sample.top_k) == (3, 7, 20)


def test_unknown_preset_suggests():
    with pytest.raises(C.ConfigError, match="did you mean 'gpt-oss-20b'"):
        C.load_run_config("gpt-oss-20")


def test_fingerprint_ignores_volatile_fields():
    a, b = C.SampleConfig(), C.SampleConfig(output_dir="elsewhere", backend="hf", shard_size=4)
    assert C.fingerprint_dict(a) == C.fingerprint_dict(b)
    assert C.fingerprint_dict(a) != C.fingerprint_dict(C.SampleConfig(temperature=0.5))


def test_a_new_field_at_its_default_keeps_the_fingerprint():
    """Finished stage directories stay valid when a later version adds a field whose default keeps the old
    behaviour."""
    import dataclasses

    Old = dataclasses.make_dataclass("Old", [("temperature", float, dataclasses.field(default=1.0))])
    New = dataclasses.make_dataclass(
        "New",
        [
            ("temperature", float, dataclasses.field(default=1.0)),
            ("stop", list, dataclasses.field(default_factory=list)),
        ],
    )
    assert C.fingerprint_dict(Old(temperature=1.6)) == C.fingerprint_dict(New(temperature=1.6)) == {"temperature": 1.6}
    assert C.fingerprint_dict(New(temperature=1.6, stop=["x"])) == {"temperature": 1.6, "stop": ["x"]}


def test_cli_flags_become_overrides():
    assert flags_to_overrides(["--top-k", "20", "--use-lora", "--no-packing", "seed=3", "--top-p=0.8"]) == [
        "top_k=20",
        "use_lora=true",
        "packing=false",
        "seed=3",
        "top_p=0.8",
    ]
    with pytest.raises(C.ConfigError):
        flags_to_overrides(["stray"])


@pytest.mark.parametrize(
    "cls", [C.SampleConfig, C.TrainConfig, C.EvalConfig, C.AnalyzeConfig, C.SweepConfig, C.RunConfig]
)
def test_every_field_carries_its_help(cls):
    sections = {
        name for name, tp in typing.get_type_hints(cls).items() if dataclasses.is_dataclass(tp)
    }  # documented by their class
    missing = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("help") and f.name not in sections]
    assert not missing, f"{cls.__name__} fields without help text: {missing}"


def test_stage_help_lists_every_field_with_type_default_and_help():
    from typer.testing import CliRunner

    from selfdistill.cli import app

    out = " ".join(CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "400"}).output.split())
    for f in dataclasses.fields(C.EvalConfig):
        assert f"{f.name} (" in out and " ".join(f.metadata["help"].split())[:60] in out, f.name
    assert "temperatures (list[float] = [0.0]): T_eval grid" in out
    assert "top_p (float = 1.0): eval top-p after top-k; 1.0 = off; range (0, 1]" in out  # the declared range


# ---------------------------------------------------------------- every value checked at load


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ("sample.temperature=-1", "sample.temperature: -1.0 is not in [0, inf)"),
        ("sample.top_p=0", "sample.top_p: 0.0 is not in (0, 1]"),
        ("sample.min_p=1", "sample.min_p: 1.0 is not in [0, 1)"),
        ("sample.limit=0", "sample.limit: 0 is not in [1, inf)"),
        ("sample.chat_date=2026-02-30", "sample.chat_date: '2026-02-30' is not a date YYYY-MM-DD"),
        ("sample.max_tokens=4096", "sample.max_tokens: 4096 leaves no room for the prompt in max_model_len 4096"),
        ("sample.backend=vlm", "sample.backend: 'vlm' is not one of vllm, hf"),
        ("train.warmup_ratio=1", "train.warmup_ratio: 1.0 is not in [0, 1)"),
        ("train.learning_rate=0", "train.learning_rate: 0.0 is not in (0, inf)"),
        ("train.min_learning_rate=1e-5", "train.min_learning_rate: 1e-05 is above learning_rate 5e-06"),
        ("train.per_device_batch_size=3", "train.global_batch_size: 32 is not a multiple of per_device_batch_size 3"),
        ("train.save_steps=0", "train.save_steps: 0 is not in [1, inf)"),
        ("eval.temperatures=0.2,-0.1", "eval.temperatures: -0.1 is not in [0, inf)"),
        ("eval.temperatures=[]", "eval.temperatures: needs at least one value"),
        ("eval.top_k=-1", "eval.top_k: -1 is not in [0, inf)"),
        ("eval.dev_fraction=1.5", "eval.dev_fraction: 1.5 is not in [0, 1]"),
        ("eval.ks=0", "eval.ks: 0 is not in [1, inf)"),
        ("eval.ks=1,4", "eval.ks: pass@4 needs as many samples per problem, n is 1"),
        ("eval.test_n=-1", "eval.test_n: -1 is not in [0, inf)"),
        ("analyze.t_evals=[]", "analyze.t_evals: needs at least one value"),
        ("analyze.top_p=1.1", "analyze.top_p: 1.1 is not in (0, 1]"),
        ("sweep.t_trains=1.0,-1", "sweep.t_trains: -1.0 is not in [0, inf)"),
        ("sweep.metric=accuracy", "sweep.metric: 'accuracy' is not pass@K"),
    ],
)
def test_a_value_out_of_its_range_names_the_field(override, error):
    with pytest.raises(C.ConfigError) as e:
        C.load_run_config(overrides=[override])
    assert str(e.value).startswith(f"command line: {error}"), str(e.value)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        (
            ["eval.n=4", "eval.test_n=2", "eval.ks=1,4"],
            "eval.ks: pass@4 needs as many samples per problem, n is 4 and test_n 2",
        ),
        (["eval.oracle=true", "eval.replies=r.jsonl"], "eval.oracle: oracle and replies exclude each other"),
        (
            ["eval.test_n=4", "eval.replies=r.jsonl"],
            "eval.test_n: the two-phase decoding protocol does not apply to replies",
        ),
        (
            ["sample.store_targets=true", "sample.top_k=0"],
            "sample.store_targets: needs temperature > 0 (a greedy token's target is the token) and top_k > 0",
        ),
        (
            ["eval.release_to=2025-05-31", "eval.release_from=2025-06-01"],
            "eval.release_from: 2025-06-01 is after release_to 2025-05-31",
        ),
        (
            ["train.save_steps=2", "train.snapshot_steps=2,3"],
            "train.snapshot_steps: [2, 3]: each must be a multiple of save_steps 2",
        ),
        (
            ["train.context_parallel_size=2", "train.packing=true"],
            "train.packing: context parallelism cannot keep packed examples apart",
        ),
        (
            ["train.max_steps=100", "train.warmup_steps=100"],
            "train.warmup_steps: 100 leaves none of the max_steps 100 after warmup",
        ),
    ],
)
def test_relations_between_fields_are_checked(overrides, error):
    with pytest.raises(C.ConfigError, match=f"^command line: {re.escape(error)}"):
        C.load_run_config(overrides=overrides)


def test_relations_that_hold_load():
    cfg = C.load_run_config(
        overrides=["eval.n=2", "eval.test_n=4", "eval.ks=1,2", "eval.replies=r.jsonl", "eval.test_n=0", "eval.ks=1,8"]
    )
    assert cfg.eval.ks == [1, 8]  # replies: k is checked against the file's samples, not n
    assert (
        C.load_run_config(overrides=["train.learning_rate=2e-4", "train.min_learning_rate=2e-5"]).train.learning_rate
        == 2e-4
    )  # 2e-4: text in YAML 1.1


def test_a_bad_value_in_a_file_names_file_and_line(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("sample:\n  temperature: 1.0\n  top_p: 1.5\n")
    with pytest.raises(C.ConfigError, match=rf"^{f}:3: sample.top_p: 1.5 is not in \(0, 1\]$"):
        C.load_run_config(config_file=str(f))
    f.write_text(
        "eval:\n  n: 4\n  max_model_len: 1024\n"
    )  # the relation is broken on line 3; max_tokens keeps its default
    with pytest.raises(C.ConfigError, match=rf"^{f}:3: eval.max_tokens: 1024 leaves no room"):
        C.load_run_config(config_file=str(f))
    f.write_text("eval:\n  release_from: 2025-02-01\n  release_to: 2025-02-30\n")  # unquoted: YAML reads dates
    with pytest.raises(C.ConfigError, match=rf"^{f}: invalid YAML: day is out of range"):
        C.load_run_config(config_file=str(f))


def test_the_final_value_is_checked_so_a_later_source_may_mend_an_earlier(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("eval:\n  top_p: 1.5\n  release_from: 2025-02-01\n")
    cfg = C.load_run_config(config_file=str(f), overrides=["eval.top_p=0.95"])
    assert cfg.eval.top_p == 0.95 and cfg.eval.release_from == "2025-02-01"


def test_a_recorded_config_is_checked_as_a_file_is():
    assert C.from_dict(C.AnalyzeConfig, {"limit": 4}, "m.json").limit == 4
    with pytest.raises(C.ConfigError, match=r"^m.json: limit: 0 is not in \[1, inf\)$"):
        C.from_dict(C.AnalyzeConfig, {"limit": 0}, "m.json")


def test_a_config_built_in_code_is_checked_too():
    with pytest.raises(C.ConfigError, match=r"^EvalConfig.ks: pass@10 needs as many samples per problem, n is 4$"):
        C.EvalConfig(n=4, ks=[1, 10])
    with pytest.raises(C.ConfigError, match=r"^SampleConfig.top_k: -1 is not in \[0, inf\)$"):
        dataclasses.replace(C.SampleConfig(), top_k=-1)


@pytest.mark.parametrize("path", sorted(str(p) for p in (Path(__file__).parents[1] / "experiments").glob("*/*.yaml")))
def test_every_committed_experiment_config_loads(path):
    assert C.load_run_config(config_file=path).sweep.t_trains


def test_within_reads_interval_notation():
    closed_open = C.Within("[0, 1)")
    assert [closed_open(v) is None for v in (0, 0.5, 1, -0.1, float("nan"))] == [True, True, False, False, False]
    open_closed = C.Within("(0, 1]", nonempty=True)
    assert [open_closed(v) is None for v in (0, 1, [0.5, 1], [0.5, 0])] == [False, True, True, False]
    assert (
        open_closed([]) == "needs at least one value"
        and C.Within("[1, inf)")(float("inf")) == "inf is not in [1, inf)"
    )


# Numbers whose every value means something; every other number declares its range (option(..., check=...)).
UNBOUNDED = {"seed", "max_steps"}  # any seed; max_steps <= 0 = off (epochs decide)


CONFIGS = [cls for name, cls in vars(C).items() if name.endswith("Config") and dataclasses.is_dataclass(cls)]


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_number_declares_its_range(cls):
    assert issubclass(cls, C.Checked), f"{cls.__name__} must derive from Checked, so that its values are checked"
    numeric = {int, float, int | None, float | None, list[int], list[float]}
    unchecked = [
        f.name
        for f in dataclasses.fields(cls)
        if typing.get_type_hints(cls)[f.name] in numeric and not f.metadata["check"] and f.name not in UNBOUNDED
    ]
    assert not unchecked, f"{cls.__name__}: give these fields a check=Within(...): {unchecked}"
