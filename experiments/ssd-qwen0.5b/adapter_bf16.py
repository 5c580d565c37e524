"""Would a bf16 copy of adapter/ rebuild the model the experiment evaluated? The evaluated model is the
fp32 adapter merged onto the bf16 base and rounded once to bf16 (`ssd models merge-lora`, train.merge_lora).
This merges the adapter as committed and a bf16 copy of it the same way and compares the merged
weights tensor by tensor: how many bf16 values differ, and by how many representable bf16 steps.

    flock /tmp/selfdistill-heavy.lock nice -n 19 python experiments/ssd-qwen0.5b/adapter_bf16.py
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from selfdistill.models import resolve_model
from selfdistill.train import merge_lora

HERE = Path(__file__).resolve().parent


def bf16_copy(adapter: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    shutil.copy(adapter / "adapter_config.json", out)
    tensors = load_file(adapter / "adapter_model.safetensors")
    save_file({name: t.to(torch.bfloat16) for name, t in tensors.items()}, out / "adapter_model.safetensors")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, default=HERE / "adapter")
    parser.add_argument("--base", default="qwen2.5-coder-0.5b-instruct")
    args = parser.parse_args()
    base = resolve_model(args.base)
    with tempfile.TemporaryDirectory() as tmp:
        small = bf16_copy(args.adapter, Path(tmp) / "adapter-bf16")
        size = lambda d: (d / "adapter_model.safetensors").stat().st_size / 2**20  # noqa: E731
        print(f"adapter: fp32 {size(args.adapter):.1f} MiB, bf16 copy {size(small):.1f} MiB")
        reference = merge_lora(base, args.adapter).state_dict()
        candidate = merge_lora(base, small).state_dict()
    values = differing = tensors_differing = one_step = 0
    farthest = 0
    for name, ref in reference.items():
        other = candidate[name]
        assert ref.dtype == other.dtype == torch.bfloat16, f"{name}: {ref.dtype} / {other.dtype}"
        steps = (bf16_order(ref) - bf16_order(other)).abs()
        values += ref.numel()
        differing += int((steps > 0).sum())
        one_step += int((steps == 1).sum())
        tensors_differing += bool((steps > 0).any())
        farthest = max(farthest, int(steps.max()))
    print(
        f"merged weights: {differing:,} of {values:,} bf16 values differ ({differing / values:.3%}), "
        f"in {tensors_differing} of {len(reference)} tensors; "
        f"{one_step:,} of them by one bf16 step (the next representable value), none by more than {farthest}"
    )


def bf16_order(t: torch.Tensor) -> torch.Tensor:
    """bf16 values as integers in the order of the values, consecutive for neighbouring bf16 numbers
    (sign and magnitude bits to two's complement), so a difference counts representable steps."""
    bits = t.contiguous().view(torch.int16).int()
    return torch.where(bits < 0, -(bits & 0x7FFF), bits)


if __name__ == "__main__":
    main()
