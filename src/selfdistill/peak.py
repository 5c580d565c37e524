"""The measured matmul peak that MFU divides by: `ssd train` records it at each sitting, the benchmarks too."""

from __future__ import annotations

import time

import torch


def matmul_peak(dtype: torch.dtype, device: str = "cpu", target_s: float = 0.3, reps: int = 3) -> float:
    """FLOP/s of a square torch.matmul in `dtype` on `device`: the size doubles until one product takes
    `target_s` (a CPU without bf16 instructions runs bf16 at ~1 GFLOP/s, so a fixed 4096 would take
    minutes), then the best of `reps`."""
    n = 256
    while _matmul_seconds(n, dtype, device) < target_s and n < 16384:
        n *= 2
    return 2 * n**3 / min(_matmul_seconds(n, dtype, device) for _ in range(reps))


def _matmul_seconds(n: int, dtype: torch.dtype, device: str) -> float:
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    sync(device)
    start = time.perf_counter()
    torch.matmul(a, b)
    sync(device)
    return time.perf_counter() - start


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
