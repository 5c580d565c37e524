"""`ssd plan` (issue 24): the memory arithmetic against hand-computed cases and against what tiny models
hold on a CPU, the paper presets' recipes on 8 x 80 GiB, docs/training.md's table, `ssd run`'s refusal,
and the stop on a driver that torch cannot use (a fake `nvidia-smi` on PATH: a fixture, not a mock)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from selfdistill import plan as P
from selfdistill.cli import app
from selfdistill.config import TrainConfig, load_run_config
from selfdistill.train import accumulation_steps, batch_plan, fsdp_policies

DOC = Path(__file__).parents[1] / "docs" / "training.md"
T = 69_632


def qwen3_4b() -> P.ModelShape:
    return P.ModelShape.of(
        P.model_config("Qwen/Qwen3-4B-Instruct-2507")
    )  # the packaged config.json: tests are offline


def test_shapes_of_the_paper_models_by_hand():
    shape = qwen3_4b()
    assert (shape.params, shape.layers, shape.hidden, shape.vocab) == (4_022_468_096, 36, 2560, 151_936)
    # per layer: q 2560x4096, k and v 2560x1024, o 4096x2560, MLP 3 x 2560x9728, norms 2 x 2560 + q/k norms 2 x 128
    assert shape.layer_params == 2560 * 4096 * 2 + 2560 * 1024 * 2 + 3 * 2560 * 9728 + 2 * 2560 + 2 * 128
    assert shape.edge_params == 151_936 * 2560 + 2560  # tied embedding and head, final norm
    # A = 6H + (q + k + v + attention output) + 3 x MLP width
    assert shape.activation_width == 6 * 2560 + (4096 + 1024 + 1024 + 4096) + 3 * 9728 == 54_784
    moe = P.ModelShape.of(P.model_config("Qwen/Qwen3-30B-A3B-Instruct-2507"))
    assert moe.activation_width == 6 * 2048 + (4096 + 512 + 512 + 4096) + 8 * (3 * 768 + 2048) == 56_320
    gpt = P.ModelShape.of(P.model_config("openai/gpt-oss-20b"))
    assert gpt.activation_width == 6 * 2880 + (4096 + 512 + 512 + 4096) + 4 * (3 * 2880 + 2880) == 72_576
    assert gpt.mxfp4 and gpt.kv_windows.count(128) == 12 and gpt.kv_windows.count(None) == 12


def test_training_terms_by_hand():
    shape = qwen3_4b()
    p = 4_022_468_096
    terms = P.training_memory(shape, P.TrainSetup(seq_len=T, gpus=8))
    assert terms == {
        "weights": 4 * p // 8,
        "gradients": 4 * p // 8,
        "AdamW state": 8 * p // 8,
        "checkpointed layer inputs": 36 * T * 2560 * 2,
        "recomputed layer": 3 * T * 54_784 * 2,
        "LM head (fused, tiled)": 4096 * 32768 * 2 + T * 2560 * 4 + 151_936 * 2560 * 4,
        "FSDP buffers": (2 * 2 + 4) * shape.layer_params + 2 * shape.edge_params,
        "CUDA context, NCCL, slack": 5 * 2**30,
    }
    # context parallelism divides the per-token terms and gathers a layer's K and V; offload empties the state
    cp = P.training_memory(shape, P.TrainSetup(seq_len=T, gpus=8, context_parallel=4, cpu_offload=True))
    assert cp["weights"] == cp["gradients"] == cp["AdamW state"] == 0
    assert cp["checkpointed layer inputs"] == 36 * (T // 4) * 2560 * 2
    assert cp["gathered K/V (context parallel)"] == 2 * T * (2 * 8 * 128 * 2)
    ddp = P.training_memory(shape, P.TrainSetup(seq_len=T, gpus=8, sharded=False, fp32_reduce=False))
    assert ddp["AdamW state"] == 8 * p and "FSDP buffers" not in ddp
    lora = P.training_memory(shape, P.TrainSetup(seq_len=T, gpus=1, lora=True))
    assert (lora["weights"], lora["gradients"], lora["AdamW state"]) == (2 * p, 0, 0)


def test_vllm_kv_cache_by_hand():
    kv = P.vllm_memory(qwen3_4b(), T, 1, 80)
    assert kv["kv_per_sequence"] == 36 * T * (2 * 8 * 128 * 2)
    assert kv["sequences"] == int((0.9 * 80 * 2**30 - 2 * 4_022_468_096 - 3 * 2**30) // kv["kv_per_sequence"])
    gpt = P.vllm_memory(P.ModelShape.of(P.model_config("openai/gpt-oss-20b")), T, 2, 80)
    assert gpt["kv_per_sequence"] == (12 * T + 12 * 128) * (2 * 8 * 64 * 2) / 2  # sliding layers hold their window


# ---------------------------------------------------------------- measured on tiny models


def tiny_config(layers: int, **widths):
    from transformers import Qwen3Config

    return Qwen3Config(**{"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": layers,
                          "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512,
                          **widths})  # fmt: skip


def test_training_state_is_the_bytes_an_adamw_step_holds():
    """fp32 weights, gradients and AdamW's moments, counted tensor by tensor after a real step."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(3)
    model = AutoModelForCausalLM.from_config(config)
    optimizer = torch.optim.AdamW(model.parameters())
    ids = torch.randint(0, 512, (1, 32))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()

    def nbytes(tensors) -> int:
        return sum(t.numel() * t.element_size() for t in tensors)

    held = {"weights": nbytes(model.parameters()), "gradients": nbytes(p.grad for p in model.parameters()),
            "AdamW state": nbytes(v for s in optimizer.state.values() for k, v in s.items()
                                  if k != "step")}  # fmt: skip
    terms = P.training_memory(P.ModelShape.of(config), P.TrainSetup(seq_len=32, gpus=1, sharded=False))
    assert held == {k: terms[k] for k in held}


def saved_bytes(config, tokens: int, checkpointing: bool) -> int:
    """Bytes the forward pass keeps for backward (distinct storages), fp32 on the CPU."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    if checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.model(input_ids=torch.randint(0, config.vocab_size, (1, tokens)))
    return sum(saved.values())


def per_layer(config_of, tokens: int, checkpointing: bool) -> float:
    """What one more decoder layer adds to the saved bytes (the embedding and final norm cancel out)."""
    return (saved_bytes(config_of(4), tokens, checkpointing) - saved_bytes(config_of(2), tokens, checkpointing)) / 2


def test_checkpointing_keeps_one_layer_input_per_layer():
    tokens = 128
    measured = per_layer(tiny_config, tokens, checkpointing=True)
    term = P.training_memory(P.ModelShape.of(tiny_config(1)), P.TrainSetup(seq_len=tokens, gpus=1))[
        "checkpointed layer inputs"
    ]
    assert measured == term * 2  # fp32 here, bf16 in the plan


@pytest.mark.parametrize("config_of", [
    lambda layers: tiny_config(layers, hidden_size=256, intermediate_size=972, num_attention_heads=16,
                               num_key_value_heads=4),
    lambda layers: __import__("transformers").LlamaConfig(hidden_size=256, intermediate_size=896,
                                                            num_hidden_layers=layers, num_attention_heads=8,
                                                            num_key_value_heads=2, vocab_size=512),
    lambda layers: __import__("transformers").Qwen3MoeConfig(hidden_size=256, moe_intermediate_size=96,
                                                              num_experts=16, num_experts_per_tok=8,
                                                              num_hidden_layers=layers, num_attention_heads=16,
                                                              num_key_value_heads=2, head_dim=16, vocab_size=512),
], ids=["qwen3", "llama", "qwen3-moe"])  # fmt: skip
def test_a_layers_forward_keeps_about_two_activation_widths_per_token(config_of):
    """The plan counts FORWARD_WIDTHS x A values per token for a layer's forward; measured without
    checkpointing, fp32, per token."""
    tokens = 256  # sdpa's CPU kernel for shorter sequences keeps more (its math fallback)
    measured = per_layer(config_of, tokens, checkpointing=False) / tokens / 4
    ratio = measured / P.activation_width(config_of(2))
    assert 0.75 * P.FORWARD_WIDTHS <= ratio <= 1.25 * P.FORWARD_WIDTHS, ratio


# ---------------------------------------------------------------- the paper presets on 8 x 80 GiB


@pytest.mark.parametrize("preset", P.paper_presets())
def test_every_paper_preset_fits_one_node_of_8_x_80_gib(preset):
    result = CliRunner().invoke(app, ["plan", "--preset", preset, "--gpus", "8", "--gpu-memory", "80"])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.endswith(": fits") or ": fits (host RAM" in first, first


def test_the_recipes_are_needed_and_the_plan_names_what_fits():
    cfg = load_run_config("qwen3-30b-a3b-instruct", overrides=["train.context_parallel_size=1"])
    plan = P.run_plan(cfg, 8, 80)
    assert not plan.fits
    options = dict(plan.options())
    assert options["train.context_parallel_size=8"].fits and not options["train.context_parallel_size=2"].fits
    assert options["train.cpu_offload=true"].fits and options["16 GPUs (2 nodes)"].fits
    gpt = P.run_plan(load_run_config("gpt-oss-20b", overrides=["train.cpu_offload=false"]), 8, 80)
    assert not gpt.fits and not any(change.startswith("train.context_parallel") for change, _ in gpt.options())
    assert "needs sdpa attention" in "\n".join(P.report_lines(gpt))


def test_a_plan_that_fits_nowhere_names_the_smallest_node():
    # 30B-A3B on one GPU: 455 GiB of state alone; 4 x 192 GiB hold 114 + the transient memory
    plan = P.run_plan(load_run_config("qwen3-30b-a3b-instruct", overrides=["train.context_parallel_size=1"]), 1, 80)
    assert plan.smallest_node() == (4, 192)
    lines = P.report_lines(replace_options_none(plan))
    assert lines[-3] == "nothing above fits; the smallest node that fits as configured: 4 x 192 GiB"


def replace_options_none(plan: P.Plan) -> P.Plan:
    """The same plan with no option that fits: an unshardable recipe on one GPU of 20 GiB, at full length."""
    return P.Plan(plan.model, plan.shape, plan.setup, 20, plan.global_batch, plan.engines)


def test_docs_training_md_holds_the_table_ssd_plan_prints():
    result = CliRunner().invoke(app, ["plan", "--markdown"])
    assert result.exit_code == 0, result.output
    block = re.search(r"<!-- ssd plan --markdown -->\n(.*?)<!-- end -->", DOC.read_text(), re.S)
    assert block and block.group(1) == result.output


# ---------------------------------------------------------------- the recipe's training settings


def test_context_parallel_processes_share_a_batch():
    cfg = TrainConfig(global_batch_size=32, context_parallel_size=8)
    assert accumulation_steps(cfg, 8) == 32  # one data-parallel rank
    assert batch_plan(cfg, 8)["context_parallel_size"] == 8
    assert "context_parallel_size" not in batch_plan(TrainConfig(), 8)  # older checkpoints' markers still match


def test_fsdp_reduces_gradients_in_fp32_and_offloads_on_request():
    from torch.distributed.fsdp import CPUOffloadPolicy

    policies = fsdp_policies(TrainConfig(cpu_offload=True), bf16=True)
    assert (policies["mixed_precision_policy"].param_dtype, policies["mixed_precision_policy"].reduce_dtype) == (
        torch.bfloat16,
        torch.float32,
    )
    assert isinstance(policies["cpu_offload"], CPUOffloadPolicy)
    assert (
        fsdp_policies(TrainConfig(gradient_reduce_dtype="bf16"), bf16=True)["mixed_precision_policy"].reduce_dtype
        == torch.bfloat16
    )
    assert fsdp_policies(TrainConfig(), bf16=False) == {}


# ---------------------------------------------------------------- GPUs the driver sees


@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch):
    """An executable `nvidia-smi` that answers the query as a node of 8 H100s with driver 535 does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text("#!/bin/sh\nfor i in 1 2 3 4 5 6 7 8; do echo '81559, 535.104.05'; done\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path('/usr/bin')}:{Path('/bin')}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return script


def test_nvidia_smi_is_read(fake_nvidia_smi):
    assert P.nvml_gpus() == P.Gpus(8, 81559 / 1024, "535.104.05")


@pytest.mark.parametrize("stage", ["train", "sample", "eval", "analyze", "run"])
def test_gpu_stages_stop_when_torch_cannot_use_the_drivers_gpus(fake_nvidia_smi, tmp_path, monkeypatch, stage):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [stage, "--output-dir", "out"])
    output = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in output
    assert "the NVIDIA driver 535.104.05 sees 8 GPUs, but torch" in output and "CPU-only build" in output
    assert "./install.sh --gpu" in output and "CUDA 12 route of docs/training.md" in output
    assert not (tmp_path / "out").exists()


def test_hidden_gpus_or_no_driver_mean_the_cpu_on_purpose(fake_nvidia_smi, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    P.require_usable_cuda()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    fake_nvidia_smi.unlink()
    P.require_usable_cuda()


def test_run_refuses_a_training_that_does_not_fit_before_any_stage(fake_nvidia_smi, tmp_path, monkeypatch):
    """Torch sees the fake node's 8 GPUs (torch's own functions patched: there is no GPU here)."""
    from selfdistill.pipeline import run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    cfg = load_run_config(
        "qwen3-30b-a3b-instruct", overrides=[f"output_dir={tmp_path / 'run'}", "train.context_parallel_size=1"]
    )
    with pytest.raises(
        P.PlanError, match=r"(?s)training would not fit .*104\.\d GiB per GPU of 79\.6: does NOT fit"
    ) as refused:
        run(cfg)
    assert "train.context_parallel_size=8: " in str(refused.value)
    assert not (tmp_path / "run").exists()
    assert P.check_training_fits(load_run_config("qwen3-30b-a3b-instruct")) is None  # the preset's recipe fits
