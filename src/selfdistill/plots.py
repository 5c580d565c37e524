"""Plotting helpers shared by `ssd analyze` and `ssd report`: headless matplotlib, one colour per
model everywhere, and PNGs written atomically (a killed run never leaves half an image)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot
import matplotlib.pyplot as plt

from .manifest import atomic_write_bytes

COLORS = {"base": "tab:gray", "ssd": "tab:blue"}
LABELS = {"base": "base", "ssd": "SSD"}


def figure(width: float = 6.0, height: float = 4.0):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.grid(True, alpha=0.3)
    return fig, ax


def save(fig, path: str | Path, dpi: int = 120) -> Path:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
