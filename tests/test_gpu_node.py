"""One GPU node (issue 15), checked without a GPU: the command line `ssd run` launches training with,
the refusal to resume on another batch plan, the paper presets' memory settings, the attention kernel
and dequantization chosen per architecture, the export's dtype handling and vLLM's per-request seeds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from selfdistill import config as C
from selfdistill.config import TrainConfig
from selfdistill.launch import accelerate_config_path, train_command, train_stage
from selfdistill.train import (
    COMPLETE,
    MarkComplete,
    TrainError,
    batch_plan,
    cast_state_dict,
    check_resume_plan,
    model_load_kwargs,
)

PAPER_PRESETS = [
    "gpt-oss-20b",
    "llama-3.1-8b-instruct",
    "qwen3-30b-a3b-instruct",
    "qwen3-30b-a3b-thinking",
    "qwen3-4b-instruct-2507",
    "qwen3-4b-thinking-2507",
]
LAUNCHER = [sys.executable, "-m", "accelerate.commands.launch"]

# ---------------------------------------------------------------- the launch command of `ssd run`


def split(command: list[str]) -> tuple[dict, list[str]]:
    """accelerate's options, and the `ssd train` key=value arguments."""
    assert command[:3] == LAUNCHER
    at = command.index("-m", 3)
    assert command[at : at + 3] == ["-m", "selfdistill", "train"]
    options = command[3:at]
    return dict(zip(options[::2], options[1::2], strict=True)), command[at + 3 :]


def test_run_launches_one_training_process_per_gpu_with_the_configured_recipe(tmp_path):
    cfg = TrainConfig(model="Qwen/Qwen3-4B-Instruct-2507", samples=str(tmp_path / "samples dir"),
                      output_dir=str(tmp_path / "train"), accelerate_config="fsdp", gradient_checkpointing=True,
                      learning_rate=5e-6, max_length=None)  # fmt: skip
    options, arguments = split(train_command(cfg, gpus=8))
    assert options == {
        "--config_file": str(accelerate_config_path("fsdp")),
        "--num_processes": "8",
        "--num_machines": "1",
    }
    assert Path(options["--config_file"]).name == "fsdp.yaml" and Path(options["--config_file"]).is_file()
    # every field travels, and the child parses it back to the same typed value (5e-06, null, a path with a space)
    assert C.load_stage_config(TrainConfig, overrides=arguments) == cfg
    assert "learning_rate=5.0e-06" in arguments and "max_length=null" in arguments


@pytest.mark.parametrize(("gpus", "num_processes", "expected"), [(8, 2, "2"), (1, 0, "1"), (0, 2, "2")])
def test_configured_processes_win_and_one_gpu_still_gets_a_fresh_process(gpus, num_processes, expected):
    options, _ = split(train_command(TrainConfig(num_processes=num_processes), gpus=gpus))
    assert options["--num_processes"] == expected
    assert Path(options["--config_file"]).name == "ddp.yaml"


def test_one_process_on_a_cpu_trains_in_process():
    assert train_command(TrainConfig(), gpus=0) is None
    assert train_command(TrainConfig(num_processes=1, accelerate_config="fsdp"), gpus=0) is None


def test_accelerate_config_is_a_shipped_name_or_a_file(tmp_path):
    recipe = tmp_path / "offload.yaml"
    recipe.write_text("distributed_type: FSDP\n")
    options, _ = split(train_command(TrainConfig(accelerate_config=str(recipe)), gpus=2))
    assert options["--config_file"] == str(recipe)
    with pytest.raises(C.ConfigError, match="'fdsp' is neither one of ddp, fsdp, zero3 nor a file"):
        train_command(TrainConfig(accelerate_config="fdsp"), gpus=2)


def test_run_stage_runs_the_launch_command_and_returns_the_trained_model(tmp_path, monkeypatch):
    out = tmp_path / "train"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"model_dir": str(out / "model")}))
    launched = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(subprocess, "run", lambda command: launched.append(command) or SimpleNamespace(returncode=0))
    cfg = TrainConfig(output_dir=str(out))
    assert train_stage(cfg) == out / "model"
    assert launched == [train_command(cfg, gpus=4)]
    monkeypatch.setattr(subprocess, "run", lambda command: SimpleNamespace(returncode=1))
    with pytest.raises(TrainError, match="training exited with status 1; rerun to resume"):
        train_stage(cfg)


# ---------------------------------------------------------------- resume only with the same batch plan


def marked_checkpoint(path: Path, plan: dict | None) -> Path:
    path.mkdir(parents=True)
    (path / COMPLETE).write_text(json.dumps({"step": 4} | ({"batch_plan": plan} if plan else {})))
    return path


def test_resume_on_another_world_size_is_refused_naming_both_batch_plans(tmp_path):
    cfg = TrainConfig(global_batch_size=32, per_device_batch_size=1)
    eight, four = batch_plan(cfg, 8), batch_plan(cfg, 4)
    assert eight == {"processes": 8, "per_device_batch_size": 1, "gradient_accumulation_steps": 4}
    checkpoint = marked_checkpoint(tmp_path / "checkpoint-4", eight)
    with pytest.raises(TrainError) as refused:
        check_resume_plan(checkpoint, four)
    message = str(refused.value)
    assert "\n" not in message and str(checkpoint) in message
    assert (
        "8 processes x 1 per device x 4 accumulation" in message
        and "4 processes x 1 per device x 8 accumulation" in message
    )
    check_resume_plan(checkpoint, eight)  # the same plan resumes
    check_resume_plan(marked_checkpoint(tmp_path / "old", None), four)  # a checkpoint from before plans were recorded


def test_complete_marker_records_the_batch_plan(tmp_path):
    plan = batch_plan(TrainConfig(global_batch_size=8, per_device_batch_size=2), 2)
    (tmp_path / "checkpoint-3").mkdir()
    MarkComplete(plan).on_save(
        SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=3, is_world_process_zero=True), None
    )
    assert json.loads((tmp_path / "checkpoint-3" / COMPLETE).read_text())["batch_plan"] == plan


# what `ssd train` says when a 2-process run is resumed by 1 process
REFUSED_ONE_PROCESS = (
    "2 processes x 2 per device x 1 accumulation, this launch has 1 processes x 2 per device x 2 accumulation"
)


def test_ssd_train_refuses_to_resume_a_run_of_another_world_size(tmp_path, tiny_model):
    from test_train import REPLY, tiny_cfg, write_samples

    from selfdistill.manifest import load_manifest
    from selfdistill.train import train

    cfg = tiny_cfg(write_samples(tmp_path / "s", tiny_model, [REPLY] * 4), tmp_path / "out", max_steps=1, save_steps=1)
    train(cfg)
    marker = tmp_path / "out" / "checkpoints" / "checkpoint-1" / COMPLETE
    assert json.loads(marker.read_text())["batch_plan"] == {
        "processes": 1,
        "per_device_batch_size": 2,
        "gradient_accumulation_steps": 2,
    }
    # as if the run had been interrupted after its checkpoint, on 2 processes
    marker.write_text(
        json.dumps(
            {"step": 1, "batch_plan": {"processes": 2, "per_device_batch_size": 2, "gradient_accumulation_steps": 1}}
        )
    )
    manifest = load_manifest(tmp_path / "out") | {"finished_at": None}
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TrainError, match=REFUSED_ONE_PROCESS):
        train(cfg)


# ---------------------------------------------------------------- presets and architectures


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_checkpoint_activations_and_shard_with_fsdp(name):
    train = C.load_run_config(name).train
    assert (train.gradient_checkpointing, train.accelerate_config, train.use_lora) == (True, "fsdp", False)
    assert train.num_processes == 0  # one per GPU of the node
    assert train.attn_implementation is None  # chosen per architecture: GPT-OSS trains its sinks (model_load_kwargs)


@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"])
def test_embedded_presets_keep_the_cpu_defaults(name):
    train = C.load_run_config(name).train
    assert (train.gradient_checkpointing, train.accelerate_config, train.attn_implementation) == (False, "ddp", None)


def test_attention_and_dequantization_are_chosen_per_architecture():
    from transformers import GptOssConfig, LlamaConfig, Mxfp4Config, Qwen2Config, Qwen3MoeConfig

    for config in (Qwen2Config(), LlamaConfig(), Qwen3MoeConfig()):
        assert model_load_kwargs(config, cuda=False, flash_attn=False) == {"attn_implementation": "sdpa"}
        assert model_load_kwargs(config, cuda=True, flash_attn=False) == {"attn_implementation": "sdpa"}
        assert model_load_kwargs(config, cuda=True, flash_attn=True) == {"attn_implementation": "flash_attention_2"}
    gpt_oss = GptOssConfig(quantization_config={"quant_method": "mxfp4"})
    for cuda, flash_attn, attention in (
        (False, False, "eager"),
        (True, True, "flex_attention"),
    ):  # flash-attn 2 would drop the sinks
        kwargs = model_load_kwargs(gpt_oss, cuda=cuda, flash_attn=flash_attn)
        assert kwargs["attn_implementation"] == attention
        assert (
            isinstance(kwargs["quantization_config"], Mxfp4Config) and kwargs["quantization_config"].dequantize is True
        )
    assert "quantization_config" not in model_load_kwargs(GptOssConfig(), cuda=True, flash_attn=True)  # already dense
    assert model_load_kwargs(gpt_oss, True, True, "eager")["attn_implementation"] == "eager"
    for dropping in ("kernels-community/vllm-flash-attn3", "flash_attention_2", "sdpa"):
        with pytest.raises(
            ValueError, match=f"train.attn_implementation={dropping}: GPT-OSS's attention sinks would get no gradient"
        ):
            model_load_kwargs(gpt_oss, True, True, dropping)


def tiny_gpt_oss(attention: str, dtype: torch.dtype, device: str = "cpu"):
    """A random two-layer GPT-OSS (one sliding-window layer, one full) with sinks far from zero."""
    from transformers import AutoModelForCausalLM, GptOssConfig

    config = GptOssConfig(
        num_hidden_layers=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        vocab_size=128,
        hidden_size=64,
        intermediate_size=64,
        head_dim=16,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=8,
    )
    torch.manual_seed(0)
    # the experts as a loop of matmuls: the grouped-GEMM kernel has no float64
    model = AutoModelForCausalLM.from_config(
        config,
        dtype=dtype,
        experts_implementation="eager",
        **model_load_kwargs(config, device == "cuda", False, attention),
    )
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.sinks.normal_(0.0, 1.0)
    return model.to(device).train()


def next_token_loss(model, tokens: torch.Tensor) -> torch.Tensor:
    """Cross-entropy in the model's dtype (transformers' own loss upcasts to float32 only)."""
    logits = model(input_ids=tokens).logits
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())


def sink_gradients(model, tokens: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    next_token_loss(model, tokens).backward()
    return [layer.self_attn.sinks.grad.clone() for layer in model.model.layers]


def test_gpt_oss_sinks_get_their_true_gradient_on_cpu():
    """The attention training picks for GPT-OSS on a CPU (eager: PyTorch's flex attention has no CPU
    backward) gives every sink the derivative of the loss: against central differences, in float64 (with
    a wide step: the norms compute in float32, whose rounding a small step would amplify)."""
    model = tiny_gpt_oss(None, torch.float64)
    assert model.config._attn_implementation == "eager"
    tokens = torch.randint(
        0, 128, (2, 20), generator=torch.Generator().manual_seed(1)
    )  # longer than the sliding window
    grads = sink_gradients(model, tokens)
    step = 2e-2
    with torch.no_grad():
        for layer, grad in zip(model.model.layers, grads, strict=True):
            sinks = layer.self_attn.sinks
            numeric = torch.zeros_like(sinks)
            for h in range(sinks.numel()):
                sinks[h] += step
                up = next_token_loss(model, tokens)
                sinks[h] -= 2 * step
                down = next_token_loss(model, tokens)
                sinks[h] += step
                numeric[h] = (up - down) / (2 * step)
            assert grad.abs().min() > 1e-6  # every sink is trained
            torch.testing.assert_close(grad, numeric, rtol=1e-2, atol=1e-6)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="flex attention has a backward on CUDA only: run this file on a GPU machine"
)
def test_gpt_oss_sinks_get_the_same_gradient_under_flex_and_eager_attention():
    """What GPT-OSS trains with on a GPU (flex attention, sinks applied through its log-sum-exp) gives the
    sinks eager attention's gradient."""
    tokens = torch.randint(0, 128, (2, 300), generator=torch.Generator().manual_seed(1)).cuda()
    flex, eager = (
        sink_gradients(tiny_gpt_oss(attention, torch.float32, "cuda"), tokens) for attention in (None, "eager")
    )
    for f, e in zip(flex, eager, strict=True):
        assert f.abs().min() > 1e-6
        torch.testing.assert_close(f, e, rtol=1e-3, atol=1e-6)


# ---------------------------------------------------------------- export


def test_export_casts_master_weights_and_keeps_tied_tensors_shared():
    embedding = torch.randn(8, 4)
    state = {
        "embed.weight": embedding,
        "lm_head.weight": embedding,
        "proj.weight": torch.randn(4, 4),
        "steps": torch.tensor([3]),
    }
    cast = cast_state_dict(state, torch.bfloat16)
    assert cast["embed.weight"] is cast["lm_head.weight"] and cast["embed.weight"].dtype == torch.bfloat16
    assert torch.equal(cast["proj.weight"], state["proj.weight"].to(torch.bfloat16))
    assert cast["steps"].dtype == torch.int64


def test_lora_merge_in_the_base_dtype_equals_a_merge_in_fp32(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from selfdistill.train import merge_lora

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp_path / "base")
    trained = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32),
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"),
    )
    for name, p in trained.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)  # as if trained
    trained.save_pretrained(tmp_path / "adapter")
    merged = merge_lora(str(tmp_path / "base"), tmp_path / "adapter")
    base32 = AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32)
    reference = PeftModel.from_pretrained(base32, str(tmp_path / "adapter")).merge_and_unload().to(torch.bfloat16)
    for (name, a), (_, b) in zip(merged.state_dict().items(), reference.state_dict().items(), strict=True):
        assert a.dtype == torch.bfloat16 and torch.equal(a, b), name


# ---------------------------------------------------------------- vLLM's per-request seeds


def test_vllm_requests_carry_their_seed_unless_turned_off():
    from selfdistill.generate import SamplingSpec, VLLMGenerator

    generator = object.__new__(VLLMGenerator)  # no engine: only the request parameters are built
    generator.stop_token_ids, generator.keeps_channels = [2], False
    spec = SamplingSpec(temperature=1.6, top_k=20, top_p=0.8)
    assert generator._params(spec, 7).seed == 7
    assert generator._params(replace(spec, per_request_seeds=False), 7).seed is None


@pytest.mark.parametrize("cls", [C.SampleConfig, C.EvalConfig])
def test_per_request_seeds_are_on_by_default_and_part_of_the_fingerprint(cls):
    assert cls().per_request_seeds is True
    assert C.fingerprint_dict(cls()) != C.fingerprint_dict(
        cls(per_request_seeds=False)
    )  # other replies: another stage dir


def test_two_launched_cpu_processes_train_and_a_one_process_resume_is_refused(tmp_path, tiny_model):
    """train_stage launches `num_processes: 2` over gloo (ddp.yaml); cut back to its first checkpoint
    as a crash leaves it, the run then refuses to resume in one process. 26 s on 2 cores."""
    from test_train import REPLY, losses, tiny_cfg, write_samples

    from selfdistill.manifest import load_manifest

    cfg = tiny_cfg(
        write_samples(tmp_path / "s", tiny_model, [REPLY] * 8),
        tmp_path / "two",
        max_steps=2,
        save_steps=1,
        num_processes=2,
    )
    assert train_stage(cfg) == tmp_path / "two" / "model"
    assert load_manifest(tmp_path / "two")["plan"]["processes"] == 2 and len(losses(tmp_path / "two")) == 2
    shutil.rmtree(tmp_path / "two" / "checkpoints" / "checkpoint-2")
    shutil.rmtree(tmp_path / "two" / "model")
    (tmp_path / "two" / "manifest.json").write_text(
        json.dumps(load_manifest(tmp_path / "two") | {"finished_at": None})
    )
    with pytest.raises(TrainError, match=REFUSED_ONE_PROCESS):
        train_stage(replace(cfg, num_processes=1))
