import dataclasses
import typing
import pytest

from selfdistill import config as C
from selfdistill.cli import flags_to_overrides


def test_paper_preset_resolves_table3_settings():
    cfg = C.load_run_config("qwen3-30b-a3b-instruct")
    assert (cfg.sample.temperature, cfg.sample.top_k, cfg.sample.top_p) == (1.6, 20, 0.8)
    assert cfg.eval.t_eval == 0.9
    assert cfg.sample.model == cfg.train.model == cfg.eval.model == "Qwen/Qwen3-30B-A3B-Instruct-2507"
    assert cfg.train.adam_beta2 == 0.95 and cfg.train.weight_decay == 0.1 and cfg.train.global_batch_size == 32


PAPER_PRESETS = {"llama-3.1-8b-instruct": "instruct", "qwen3-4b-instruct-2507": "instruct", "qwen3-30b-a3b-instruct": "instruct",
                 "qwen3-4b-thinking-2507": "thinking", "qwen3-30b-a3b-thinking": "thinking", "gpt-oss-20b": "thinking"}
TABLE4 = {"llama-3.1-8b-instruct": (0.9, 0, 0.8), "qwen3-4b-instruct-2507": (0.7, 20, 0.8), "qwen3-4b-thinking-2507": (0.6, 20, 0.95),
          "qwen3-30b-a3b-instruct": (0.7, 20, 0.8), "qwen3-30b-a3b-thinking": (0.6, 20, 0.95), "gpt-oss-20b": (1.0, 0, 1.0)}  # T, top-k, top-p


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
    assert cfg.sample.reasoning_effort == cfg.eval.reasoning_effort == "high" and cfg.sample.chat_date == cfg.eval.chat_date == C.CHAT_DATE
    assert (cfg.eval.top_k, cfg.eval.top_p, cfg.eval.t_eval) == (20, 0.95, 1.0)


def test_overrides_are_typed_and_dotted():
    cfg = C.load_run_config("qwen2.5-coder-0.5b-instruct", overrides=["sample.temperature=1.2", "eval.temperatures=0.2,0.4", "train.use_lora=false", "model=some/hub-id"])
    assert cfg.sample.temperature == 1.2 and cfg.eval.temperatures == [0.2, 0.4] and cfg.train.use_lora is False
    assert cfg.model == cfg.sample.model == cfg.eval.model == "some/hub-id"


def test_stage_overrides_are_relative_to_the_section():
    cfg = C.load_stage_config(C.SampleConfig, "qwen2.5-coder-0.5b-instruct", overrides=["top_k=5", "model=tiny-random"])
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
    """Finished stage directories stay valid when a later version adds a field whose default keeps the old behaviour."""
    import dataclasses

    Old = dataclasses.make_dataclass("Old", [("temperature", float, dataclasses.field(default=1.0))])
    New = dataclasses.make_dataclass("New", [("temperature", float, dataclasses.field(default=1.0)),
                                             ("stop", list, dataclasses.field(default_factory=list))])
    assert C.fingerprint_dict(Old(temperature=1.6)) == C.fingerprint_dict(New(temperature=1.6)) == {"temperature": 1.6}
    assert C.fingerprint_dict(New(temperature=1.6, stop=["x"])) == {"temperature": 1.6, "stop": ["x"]}


def test_cli_flags_become_overrides():
    assert flags_to_overrides(["--top-k", "20", "--use-lora", "--no-packing", "seed=3", "--top-p=0.8"]) == ["top_k=20", "use_lora=true", "packing=false", "seed=3", "top_p=0.8"]
    with pytest.raises(C.ConfigError):
        flags_to_overrides(["stray"])


@pytest.mark.parametrize("cls", [C.SampleConfig, C.TrainConfig, C.EvalConfig, C.AnalyzeConfig, C.SweepConfig, C.RunConfig])
def test_every_field_carries_its_help(cls):
    sections = {name for name, tp in typing.get_type_hints(cls).items() if dataclasses.is_dataclass(tp)}  # documented by their class
    missing = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("help") and f.name not in sections]
    assert not missing, f"{cls.__name__} fields without help text: {missing}"


def test_stage_help_lists_every_field_with_type_default_and_help():
    from typer.testing import CliRunner

    from selfdistill.cli import app

    out = " ".join(CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "400"}).output.split())
    for f in dataclasses.fields(C.EvalConfig):
        assert f"{f.name} (" in out and " ".join(f.metadata["help"].split())[:60] in out, f.name
    assert "temperatures (list[float] = [0.0]): T_eval grid" in out
