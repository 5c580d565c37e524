"""Grading profiles: the rules that turn a reply into a verdict. Every profile runs programs in the same
sandbox (sandbox.py, same isolation); profiles differ only in how code is extracted, the time and size
limits, and how calls, return values and exits count. docs/grading.md explains each rule.

    PROFILES["strict"]   this project's own rules: the default of every benchmark except livecodebench
    PROFILES["lcb"]      the verdicts of LiveCodeBench's lcb_runner: the default of livecodebench
    Grading.limits(timeout=None, memory_mb=None) -> sandbox.Limits   the profile's, with config overrides
    Grading.rules() -> dict                                         what an eval records, to find verdicts graded
                                                                    otherwise
    legacy_rules(profile) -> dict      the rules of an eval that recorded none: graded before sanitizing existed

A benchmark names its default profile in the registry (benchmarks.BENCHMARKS); `eval.grading` picks
another (benchmarks.Benchmark.graded_by). Extraction and jobs are built in benchmarks.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .sandbox import Limits


@dataclass(frozen=True)
class Grading:
    name: str
    timeout: float  # seconds per execution (a stdio test, an assert job, a block of call tests), or per call, below
    timeout_per_call: (
        bool  # call tests: the timeout holds for the program's top level and for each call, all in one run
    )
    memory_mb: int  # address-space limit per execution
    max_output_bytes: int  # stdout and stderr, each, per execution
    fence_lines: (
        bool  # extraction: the text between the last two lines that contain ```; else the last fenced Python block
    )
    call_runs_main: bool  # call tests run the program as __main__, so its `if __name__ == "__main__":` block runs
    nested_tuples_as_lists: bool  # tuples anywhere in a return value equal lists; else only a returned tuple does
    top_level_function: bool  # "Solution().f" is a top-level f when the code does not contain "class Solution"
    system_exit_ok: bool  # a stdio program ended by SystemExit, whatever its code, is graded on its output
    # function-style replies keep only the imports and definitions their entry point reaches (EvalPlus's sanitize)
    sanitize: bool

    def rules(self) -> dict:
        """The rules as recorded in an eval's manifest and summary ("grading_rules"): verdicts graded under
        other rules are regraded when the eval reopens (evaluate.py)."""
        return dataclasses.asdict(self)

    def limits(self, timeout: float | None = None, memory_mb: int | None = None) -> Limits:
        return Limits(
            timeout=self.timeout if timeout is None else timeout,
            memory_mb=self.memory_mb if memory_mb is None else memory_mb,
            max_output_bytes=self.max_output_bytes,
        )


PROFILES = {
    g.name: g
    for g in [
        Grading(
            "strict",
            timeout=10.0,
            timeout_per_call=False,
            memory_mb=1024,
            max_output_bytes=1 << 20,
            fence_lines=False,
            call_runs_main=True,
            nested_tuples_as_lists=True,
            top_level_function=False,
            system_exit_ok=False,
            sanitize=True,
        ),
        # lcb_runner has no memory or output cap; these only keep a runaway program from taking the machine down
        Grading(
            "lcb",
            timeout=6.0,
            timeout_per_call=True,
            memory_mb=8192,
            max_output_bytes=64 << 20,
            fence_lines=True,
            call_runs_main=False,
            nested_tuples_as_lists=False,
            top_level_function=True,
            system_exit_ok=True,
            sanitize=False,
        ),
    ]
}


def legacy_rules(profile: Grading) -> dict:
    """An eval directory written before rules were recorded was graded without sanitizing; its other rules
    are its profile's (the fingerprint pins the profile)."""
    return dataclasses.replace(profile, sanitize=False).rules()
