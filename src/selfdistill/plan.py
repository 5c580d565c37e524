"""`ssd plan`: the memory a run needs per GPU, before any of it runs, and the GPUs this machine has.

Training (full fine-tune or LoRA, one sequence of T tokens per GPU, P parameters, L layers of width H),
per GPU, in bytes:
- training state: fp32 master weights 4P, fp32 gradients 4P, AdamW's two fp32 moments 8P, divided by
  the GPUs that shard them (FSDP/ZeRO-3: all of them; DDP: none); on the CPU with `cpu_offload`.
  LoRA: the frozen bf16 weights 2P (the adapter's state is negligible);
- activations: with gradient checkpointing one bf16 layer input per layer (L x t x H x 2) plus the
  layer being recomputed with its gradients (3 x t x A x 2), t = T / context_parallel_size tokens on
  this GPU and A the activation width of a layer per token (activation_width); without it every
  layer's activations (L x t x 2A x 2) plus one layer's gradients. A layer's forward keeps about 2A
  values per token (measured on CPU: 1.8 to 2.4 A for Qwen3, Llama and Qwen3-MoE shapes, tests/test_plan.py;
  q, k and v before and after the norms and rotary embedding, fp32 norm inputs), its gradients about A
  more. Eager attention adds its heads x t x T bf16 scores; context parallelism adds the gathered K and V
  of a layer;
- the LM head through TRL's fused kernel (train.py): one bf16 tile of 4,096 tokens x 32,768
  vocabulary entries, and in backward the fp32 gradients of the hidden states (t x H x 4) and of the
  head (V x H x 4), never the t x V logits;
- FSDP buffers: two layers' bf16 weights gathered (the running one and the prefetched one), one
  layer's gradient in the reduce dtype, and the embedding and LM head gathered in bf16;
- CUDA context, NCCL buffers and allocator slack: 5 GiB, assumed.
vLLM (sample, eval), per GPU of a tensor-parallel engine: its weights (bf16; MXFP4 experts at 4.25
bits), 3 GiB of activations and CUDA graphs (assumed), and the KV cache in what is left of vLLM's 90%
(gpu_memory_utilization): the bf16 K and V of every layer for each token of max_model_len (sliding
window layers hold their window only).

Arithmetic, not measurements: tests/test_plan.py checks each term against hand-computed cases and the
terms a CPU can measure (the training state's bytes, checkpointed inputs) against tiny models.
`training_memory` is the function a GPU probe compares its measured peak with.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from . import SelfdistillError
from .config import RunConfig

GIB = 2**30
CONTEXT_BYTES = 5 * GIB  # CUDA context, NCCL buffers, allocator slack: assumed, not measured
LM_HEAD_TILE = 4096 * 32768  # trl.kernels.chunked_logprob: TOKEN_CHUNK_SIZE x _CHUNKED_LOGPROB_CHUNK_SIZE
VLLM_UTILIZATION = 0.9  # vLLM's gpu_memory_utilization default
VLLM_ACTIVATION_BYTES = 3 * GIB  # vLLM's activation peak, CUDA graphs and context: assumed
FORWARD_WIDTHS = 2  # a layer's forward keeps ~2A values per token (measured, tests/test_plan.py)
MXFP4_BYTES = 4.25 / 8  # 4-bit values and one 8-bit scale per 32
NODE_GPUS = 8
NODES = [(gpus, memory) for memory in (80, 141, 192) for gpus in (1, 2, 4, 8, 16, 32)]  # GiB per GPU: H100, H200, B200
INSTALL_FIX = (
    "run ./install.sh --gpu (vLLM 0.33's torch 2.14.0 is a CUDA 13.0 build and needs driver R580 or newer); "
    "on an older driver upgrade it, or take the CUDA 12 route of docs/training.md, 'Installing on a GPU node'"
)


class PlanError(SelfdistillError, RuntimeError):
    pass


# ---------------------------------------------------------------- the model's sizes


def model_config(model: str):
    """The model's transformers config: from its directory, the registry or the hub; offline, the
    packaged copy of a paper model's config.json (presets/model-configs/)."""
    from transformers import AutoConfig

    from .models import resolve_model

    path = resolve_model(model)
    packaged = Path(str(resources.files("selfdistill.presets") / "model-configs" / f"{model.replace('/', '--')}.json"))
    # a local directory or the hub's cache, then the packaged copy, and only then the hub (which retries for a
    # minute offline)
    try:
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except OSError:
        if packaged.is_file():
            return AutoConfig.from_pretrained(str(packaged))
    try:
        return AutoConfig.from_pretrained(path)
    except OSError as e:
        raise PlanError(
            f"cannot read the config of model {model!r} ({e}); `ssd plan` needs it to size the model"
        ) from None


@dataclass(frozen=True)
class ModelShape:
    params: int
    layers: int
    hidden: int
    vocab: int
    layer_params: int  # the largest decoder layer
    edge_params: int  # outside the layers: embedding, LM head, final norm
    expert_params: int
    activation_width: int  # A: bf16 values a layer keeps per token (see activation_width)
    heads: int
    kv_token_bytes: int  # bf16 K and V of one token in one layer
    kv_windows: tuple[int | None, ...]  # per layer: its sliding window, None for full attention
    mxfp4: bool
    model_type: str

    @classmethod
    def of(cls, config, layers: int | None = None) -> ModelShape:
        """Sizes from the config; parameters counted on a meta-device instance (no memory, any
        architecture). `layers` overrides the config's layer count."""
        import torch
        from transformers import AutoModelForCausalLM

        if layers is not None:
            config = config.__class__.from_dict({**config.to_dict(), "num_hidden_layers": layers, "layer_types": None})
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        params = sum(p.numel() for p in model.parameters())
        decoder = model.get_decoder().layers
        layer_params = max(sum(p.numel() for p in layer.parameters()) for layer in decoder)
        experts = sum(p.numel() for name, p in model.named_parameters() if ".experts." in name)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        window = getattr(config, "sliding_window", None)
        types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
        quantization = getattr(config, "quantization_config", None) or {}
        method = (
            quantization.get("quant_method")
            if isinstance(quantization, dict)
            else getattr(quantization, "quant_method", None)
        )
        return cls(params=params, layers=config.num_hidden_layers, hidden=config.hidden_size, vocab=config.vocab_size,
                   layer_params=layer_params,
                   edge_params=params - sum(sum(p.numel() for p in layer.parameters()) for layer in decoder),
                   expert_params=experts, activation_width=activation_width(config), heads=config.num_attention_heads,
                   kv_token_bytes=2 * kv_heads * head_dim * 2,
                   kv_windows=tuple(window if t == "sliding_attention" else None for t in types),
                   mxfp4=method == "mxfp4", model_type=config.model_type)  # fmt: skip


def activation_width(config) -> int:
    """A, the bf16 values a decoder layer keeps per token for its backward: 6 x H (norms, residual adds,
    projections' outputs), the attention widths (q, k, v and the attention output), 3 x the MLP width
    (gate, up, their product) of the dense MLP or of each of the k experts a token visits, and k x H for
    those experts' outputs."""
    hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv = (getattr(config, "num_key_value_heads", None) or heads) * head_dim
    attention = 2 * heads * head_dim + 2 * kv
    experts = getattr(config, "num_experts", None) or getattr(config, "num_local_experts", None)
    if experts:
        k = config.num_experts_per_tok
        mlp = k * (3 * (getattr(config, "moe_intermediate_size", None) or config.intermediate_size) + hidden)
    else:
        mlp = 3 * config.intermediate_size
    return 6 * hidden + attention + mlp


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainSetup:
    seq_len: int
    gpus: int
    context_parallel: int = 1
    cpu_offload: bool = False
    sharded: bool = True  # FSDP or ZeRO-3; False: DDP
    gradient_checkpointing: bool = True
    per_device_batch: int = 1
    lora: bool = False
    eager_attention: bool = False
    fp32_reduce: bool = True


def training_memory(shape: ModelShape, setup: TrainSetup) -> dict[str, int]:
    """Bytes per GPU of one training step, term by term (the module's docstring says what each is). Their
    sum is the predicted peak; a GPU probe that reads torch.cuda.max_memory_allocated compares it with
    the sum less the assumed "CUDA context, NCCL, slack" term, which the allocator does not see."""
    p, shard = shape.params, setup.gpus if setup.sharded else 1
    tokens = setup.per_device_batch * setup.seq_len // setup.context_parallel
    on_gpu = 0 if setup.cpu_offload else 1
    terms = {"weights": (2 if setup.lora else 4) * p * on_gpu // shard,
             "gradients": 0 if setup.lora else 4 * p * on_gpu // shard,
             "AdamW state": 0 if setup.lora else 8 * p * on_gpu // shard}  # fmt: skip
    width = tokens * shape.activation_width * 2  # A values per token, bf16
    if setup.gradient_checkpointing:
        terms["checkpointed layer inputs"] = shape.layers * tokens * shape.hidden * 2
        terms["recomputed layer"] = (FORWARD_WIDTHS + 1) * width
    else:
        terms["activations"] = shape.layers * FORWARD_WIDTHS * width + width
    if setup.eager_attention:
        terms["attention scores (eager)"] = setup.per_device_batch * shape.heads * tokens * setup.seq_len * 2
    if setup.context_parallel > 1:  # the full sequence's K and V of a layer, and their gradients
        terms["gathered K/V (context parallel)"] = 2 * setup.per_device_batch * setup.seq_len * shape.kv_token_bytes
    terms["LM head (fused, tiled)"] = (
        LM_HEAD_TILE * 2 + tokens * shape.hidden * 4 + (0 if setup.lora else shape.vocab * shape.hidden * 4)
    )
    if setup.sharded:
        terms["FSDP buffers"] = (2 * 2 + (4 if setup.fp32_reduce else 2)) * shape.layer_params + 2 * shape.edge_params
    terms["CUDA context, NCCL, slack"] = CONTEXT_BYTES
    return terms


def host_memory(shape: ModelShape, setup: TrainSetup) -> int:
    """Bytes of CPU memory the offloaded training state takes on one node of NODE_GPUS GPUs."""
    if not setup.cpu_offload:
        return 0
    per_gpu = (2 if setup.lora else 16) * shape.params // (setup.gpus if setup.sharded else 1)
    return per_gpu * min(setup.gpus, NODE_GPUS)


# ---------------------------------------------------------------- vLLM


def vllm_memory(shape: ModelShape, max_model_len: int, tensor_parallel: int, gpu_gib: float) -> dict:
    """Per GPU of one engine: its weights, the KV cache of one max_model_len sequence, the KV space left,
    and how many such sequences fit at once (vLLM refuses to start below one)."""
    weights = (
        2 * (shape.params - shape.expert_params) + (MXFP4_BYTES if shape.mxfp4 else 2) * shape.expert_params
    ) / tensor_parallel
    kv_sequence = (
        sum(shape.kv_token_bytes * min(max_model_len, w or max_model_len) for w in shape.kv_windows) / tensor_parallel
    )
    space = VLLM_UTILIZATION * gpu_gib * GIB - weights - VLLM_ACTIVATION_BYTES
    return {
        "weights": weights,
        "kv_per_sequence": kv_sequence,
        "kv_space": space,
        "sequences": max(0, int(space // kv_sequence)),
    }


# ---------------------------------------------------------------- a run's plan


@dataclass
class Plan:
    model: str
    shape: ModelShape
    setup: TrainSetup
    gpu_gib: float
    global_batch: int
    engines: dict[str, tuple[int, int]]  # stage -> (max_model_len, tensor_parallel_size)

    @property
    def terms(self) -> dict[str, int]:
        return training_memory(self.shape, self.setup)

    @property
    def per_gpu(self) -> int:
        return sum(self.terms.values())

    @property
    def fits(self) -> bool:
        return self.per_gpu <= self.gpu_gib * GIB

    def with_setup(self, **changes) -> Plan:
        return replace(self, setup=replace(self.setup, **changes))

    def batch_divides(self, setup: TrainSetup) -> bool:
        return self.global_batch % (setup.per_device_batch * (setup.gpus // setup.context_parallel)) == 0

    def context_parallel_allowed(self) -> str | None:
        """Why context parallelism cannot run here, or None. It needs sdpa attention (transformers'
        Trainer), which GPT-OSS's attention sinks rule out."""
        if self.shape.model_type == "gpt_oss" or self.setup.eager_attention:
            return "needs sdpa attention; GPT-OSS's attention sinks do not run on it"
        if not self.setup.sharded:
            return "needs FSDP2 (accelerate_config fsdp)"
        return None

    def options(self) -> list[tuple[str, Plan]]:
        """Changes that would make training fit (or fit better), each as the overrides that make it."""
        out = []
        if self.context_parallel_allowed() is None:
            for cp in (2, 4, 8):
                setup = replace(self.setup, context_parallel=cp)
                if cp != self.setup.context_parallel and self.setup.gpus % cp == 0 and self.batch_divides(setup):
                    out.append((f"train.context_parallel_size={cp}", replace(self, setup=setup)))
        if self.setup.sharded:
            out.append(
                (
                    f"train.cpu_offload={str(not self.setup.cpu_offload).lower()}",
                    self.with_setup(cpu_offload=not self.setup.cpu_offload),
                )
            )
        for gpus in (self.setup.gpus * 2, self.setup.gpus * 4):
            nodes = f" ({math.ceil(gpus / NODE_GPUS)} nodes)" if gpus > NODE_GPUS else ""
            out.append((f"{gpus} GPUs{nodes}", self.with_setup(gpus=gpus)))
        length = self.longest_that_fits()
        if length and length < self.setup.seq_len:
            out.append((f"train.max_length={length} (longer samples dropped)", self.with_setup(seq_len=length)))
        return out

    def longest_that_fits(self) -> int | None:
        """The longest max_length, in steps of 1,024 tokens, that fits as configured."""
        low, high = 0, self.setup.seq_len // 1024
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if self.with_setup(seq_len=mid * 1024).fits else (low, mid - 1)
        return low * 1024 or None

    def smallest_node(self) -> tuple[int, int] | None:
        """The smallest (GPUs, GiB per GPU), by total memory, on which the configured setup fits."""
        for gpus, memory in sorted(NODES, key=lambda n: (n[0] * n[1], n[0])):
            if replace(self, gpu_gib=memory).with_setup(gpus=gpus).fits and self.batch_divides(
                replace(self.setup, gpus=gpus)
            ):
                return gpus, memory
        return None


def run_plan(cfg: RunConfig, gpus: int, gpu_gib: float, config=None) -> Plan:
    """The plan of `cfg`'s training and engines on `gpus` GPUs of `gpu_gib` GiB. The longest training
    example is at most sample.max_model_len tokens unless train.max_length caps it."""
    from .train import model_load_kwargs

    config = config if config is not None else model_config(cfg.train.model)
    train = cfg.train
    attention = model_load_kwargs(config, cuda=True, flash_attn=True, attention=train.attn_implementation)[
        "attn_implementation"
    ]
    setup = TrainSetup(seq_len=train.max_length or cfg.sample.max_model_len, gpus=train.num_processes or gpus,
                       context_parallel=train.context_parallel_size, cpu_offload=train.cpu_offload,
                       sharded=sharded(train.accelerate_config), gradient_checkpointing=train.gradient_checkpointing,
                       per_device_batch=train.per_device_batch_size, lora=train.use_lora,
                       eager_attention=attention == "eager",
                       fp32_reduce=train.gradient_reduce_dtype == "fp32")  # fmt: skip
    engines = {
        "sample": (cfg.sample.max_model_len, cfg.sample.tensor_parallel_size),
        "eval": (cfg.eval.max_model_len, cfg.eval.tensor_parallel_size),
    }
    return Plan(cfg.train.model, ModelShape.of(config), setup, gpu_gib, train.global_batch_size, engines)


def sharded(accelerate_config: str) -> bool:
    """Whether the launch recipe shards the training state: fsdp and zero3 do, ddp does not; a file of
    one's own, by its distributed_type."""
    import yaml

    from .launch import accelerate_config_path

    recipe = yaml.safe_load(accelerate_config_path(accelerate_config).read_text()) or {}
    return recipe.get("distributed_type") in ("FSDP", "DEEPSPEED")


# ---------------------------------------------------------------- output


def gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def describe(plan: Plan) -> str:
    s = plan.setup
    parts = [f"{s.gpus} GPU{'s' if s.gpus > 1 else ''} of {plan.gpu_gib:.3g} GiB", f"T = {s.seq_len:,} tokens",
             "FSDP" if s.sharded else "DDP", "LoRA" if s.lora else "full fine-tune"]  # fmt: skip
    parts += [f"context parallel {s.context_parallel}"] * (s.context_parallel > 1) + ["CPU offload"] * s.cpu_offload
    parts += ["gradient checkpointing"] * s.gradient_checkpointing + [
        "fp32 gradient reduction" if s.fp32_reduce else "bf16 gradient reduction"
    ] * s.sharded
    return ", ".join(parts)


def verdict(plan: Plan) -> str:
    need = f"{gib(plan.per_gpu)} GiB per GPU of {plan.gpu_gib:.3g}"
    host = host_memory(plan.shape, plan.setup)
    return f"{need}: {'fits' if plan.fits else 'does NOT fit'}" + (
        f" (host RAM for the offloaded state: {gib(host)} GiB per node)" if host else ""
    )


def report_lines(plan: Plan) -> list[str]:
    """What does not fit and what would: the refusal's message and the tail of `ssd plan`."""
    lines = [f"training {plan.model}: {describe(plan)}: {verdict(plan)}"]
    lines += [f"  {name}: {gib(value)} GiB" for name, value in plan.terms.items()]
    lines.append("options:")
    for change, option in plan.options():
        lines.append(f"  {change}: {verdict(option)}")
    if plan.context_parallel_allowed():
        lines.append(f"  (context parallelism {plan.context_parallel_allowed()})")
    if not plan.fits and not any(option.fits for _, option in plan.options()):
        node = plan.smallest_node()
        lines.append(f"nothing above fits; the smallest node that fits as configured: {node[0]} x {node[1]} GiB"
                     if node else "no node of up to 32 x 192 GiB fits as configured")  # fmt: skip
    for stage, (length, tp) in plan.engines.items():
        v = vllm_memory(plan.shape, length, tp, plan.gpu_gib)
        lines.append(f"vLLM {stage} (tensor_parallel_size {tp}, max_model_len {length:,}): "
                     f"weights {gib(v['weights'])} GiB per GPU, "
                     f"KV cache {gib(v['kv_per_sequence'])} GiB per full-length sequence, "
                     f"{gib(v['kv_space'])} GiB of KV space: "
                     + (f"{v['sequences']} full-length sequences at once" if v["sequences"]
                        else "not one full-length sequence fits; raise tensor_parallel_size"))  # fmt: skip
    return lines


def check_training_fits(cfg: RunConfig) -> None:
    """`ssd run` and `ssd sweep`, before any stage: refuse, with the plan's numbers, a training that will
    not fit this machine's GPUs. Silent where no usable GPU is known (CPU runs)."""
    gpus = local_gpus()
    if gpus is None:
        return
    plan = run_plan(cfg, gpus.count, gpus.memory_gib)
    if plan.setup.gpus % plan.setup.context_parallel:
        raise PlanError(
            f"train.context_parallel_size {plan.setup.context_parallel} does not divide the {plan.setup.gpus} "
            "training processes; "
            "set it to a divisor (`ssd plan` shows what fits)"
        )
    if not plan.fits:
        raise PlanError(
            "training would not fit this machine's GPUs (`ssd plan` with the same arguments prints this):\n"
            + "\n".join(report_lines(plan))
        )


def paper_presets() -> list[str]:
    from .config import load_run_config, preset_names

    return [name for name in preset_names() if load_run_config(name).train.accelerate_config == "fsdp"]


def markdown_table(gpus: int = 8, gpu_gib: float = 80) -> str:
    """docs/training.md's memory table, for every paper preset as shipped (its recipe) on `gpus` x
    `gpu_gib`: `ssd plan --markdown` prints it, and tests/test_plan.py checks that the doc holds it."""
    from .config import load_run_config

    plans = {name: run_plan(load_run_config(name), gpus, gpu_gib) for name in paper_presets()}
    names = list(next(iter(plans.values())).terms)
    for plan in plans.values():
        names += [n for n in plan.terms if n not in names]
    header = ["preset", "P", "recipe", *names, "per GPU (GiB)", f"fits {gpus} x {gpu_gib:g} GiB", "without the recipe"]
    rows = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, plan in plans.items():
        s = plan.setup
        recipe = (
            ", ".join(
                [f"context parallel {s.context_parallel}"] * (s.context_parallel > 1) + ["CPU offload"] * s.cpu_offload
            )
            or "plain FSDP"
        )
        plain = plan.with_setup(context_parallel=1, cpu_offload=False)
        cells = [name, f"{plan.shape.params / 1e9:.2f}B", recipe,
                 *(gib(plan.terms[n]) if n in plan.terms else "-" for n in names),
                 gib(plan.per_gpu), "yes" if plan.fits else "no", f"{gib(plain.per_gpu)}"]  # fmt: skip
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


# ---------------------------------------------------------------- this machine's GPUs


@dataclass(frozen=True)
class Gpus:
    count: int
    memory_gib: float  # the smallest card's
    driver: str


def nvml_gpus() -> Gpus | None:
    """The GPUs the NVIDIA driver sees (NVML through pynvml where installed, else nvidia-smi), whatever
    torch thinks; None without a driver."""
    try:
        import pynvml
    except ImportError:
        return _nvidia_smi_gpus()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        memory = [pynvml.nvmlDeviceGetMemoryInfo(h).total / GIB for h in handles]
        driver = pynvml.nvmlSystemGetDriverVersion()
        return (
            Gpus(len(handles), min(memory), driver if isinstance(driver, str) else driver.decode())
            if handles
            else None
        )
    finally:
        pynvml.nvmlShutdown()


def _nvidia_smi_gpus() -> Gpus | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=memory.total,driver_version", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    except (subprocess.SubprocessError, OSError):
        return None
    rows = [[field.strip() for field in line.split(",")] for line in out.splitlines() if line.strip()]
    try:
        return Gpus(len(rows), min(float(r[0]) for r in rows) / 1024, rows[0][1]) if rows else None
    except (ValueError, IndexError):
        return None


def cpu_requested() -> bool:
    """CUDA_VISIBLE_DEVICES empty or -1: the user hid the GPUs on purpose."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return visible is not None and visible.strip() in ("", "-1")


def require_usable_cuda() -> None:
    """Refuse to go on when the driver sees GPUs that torch cannot use (a CUDA 13 torch on a CUDA 12
    driver reports no CUDA at all): the stage would run on the CPU, in fp32, for days, without a word."""
    import torch

    if cpu_requested() or torch.cuda.is_available():
        return
    gpus = nvml_gpus()
    if gpus is None or gpus.count == 0:
        return
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    raise PlanError(f"the NVIDIA driver {gpus.driver} sees {gpus.count} GPU{'s' if gpus.count > 1 else ''}, "
                    f"but torch {torch.__version__} "
                    f"({build}) cannot use them, so this would run on the CPU. Fix: {INSTALL_FIX}. "
                    "To run on the CPU on purpose, set CUDA_VISIBLE_DEVICES=\"\".")  # fmt: skip


def local_gpus() -> Gpus | None:
    """This machine's GPUs where torch can use them (CUDA_VISIBLE_DEVICES counts), else None."""
    import torch

    if not torch.cuda.is_available():
        return None
    count, gpus = torch.cuda.device_count(), nvml_gpus()
    if not count:
        return None
    if gpus is None:  # no NVML here: ask torch
        return Gpus(
            count, min(torch.cuda.get_device_properties(i).total_memory for i in range(count)) / GIB, "unknown"
        )
    return replace(gpus, count=count)
