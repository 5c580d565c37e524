"""Library log noise out of the way: what vLLM, transformers, datasets, accelerate and torch log (their
INFO lines and warnings, Python warnings from outside this package) goes to `library.log` in the stage
directory being written, not to the console, unless the command is given --verbose.

    quiet_libraries()        the CLI's default for the stage commands, before any of those libraries logs
    to_stage_dir(path)       RunDir.open: the log now goes to PATH/library.log (what came before it too)

Records logged before any stage directory opens are kept and written there; if none opens (a command that
fails early), the warnings among them are printed when the process ends, so nothing is lost. vLLM's
engine processes on GPU (not its in-process CPU engine) still print their own warnings.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import warnings
from pathlib import Path

LOG_FILE = "library.log"
_PACKAGE_DIR = str(Path(__file__).parent)


class StageLog(logging.Handler):
    """Writes to the current stage directory's log file; holds records until one is set."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.pending: list[logging.LogRecord] = []
        self.file = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.file is None:
            self.pending.append(record)
        else:
            self.file.write(self.format(record) + "\n")
            self.file.flush()

    def to(self, path: Path) -> None:
        if self.file is not None:
            self.file.close()
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for every record to come, until the next stage
        for record in self.pending:
            self.emit(record)
        self.pending.clear()

    def print_held(self) -> None:
        """At exit without a stage directory: the warnings held are printed rather than lost."""
        for record in self.pending:
            if record.levelno >= logging.WARNING:
                print(self.format(record), file=sys.stderr)
        self.pending.clear()


_handler: StageLog | None = None


def quiet_libraries() -> None:
    global _handler
    if _handler is not None:
        return
    _handler = StageLog()
    os.environ.setdefault(
        "VLLM_CONFIGURE_LOGGING", "0"
    )  # vLLM's loggers then propagate here instead of printing (read at its import)
    import datasets.utils.logging
    import transformers.utils.logging

    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()
    for handler in list(datasets.utils.logging._get_library_root_logger().handlers):
        datasets.utils.logging._get_library_root_logger().removeHandler(handler)
    root = logging.getLogger()
    root.addHandler(_handler)
    root.setLevel(logging.INFO)
    shown = warnings.showwarning

    def show_warning(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(_PACKAGE_DIR):  # ours are meant for the user
            return shown(message, category, filename, lineno, file, line)
        logging.getLogger("py.warnings").warning(
            warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        )

    warnings.showwarning = show_warning
    atexit.register(_handler.print_held)


def to_stage_dir(path: str | Path) -> None:
    if _handler is not None:
        _handler.to(Path(path) / LOG_FILE)
