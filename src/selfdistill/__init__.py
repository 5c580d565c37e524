"""selfdistill: simple self-distillation (SSD) for code LLMs, end to end."""

__version__ = "0.1.0"
