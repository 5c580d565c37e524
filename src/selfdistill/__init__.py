"""selfdistill: simple self-distillation (SSD) for code LLMs, end to end."""

__version__ = "0.1.0"


class SelfdistillError(Exception):
    """Bad input (a config, file, model, output directory, or a machine that cannot run the stage): the CLI
    prints its message as one `error:` line, no traceback, and exits with `exit_code`. Here, not in a
    module, so that the leaf modules (chat, rows) can raise it too."""

    exit_code = 1
