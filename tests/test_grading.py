"""Grading profiles: the registry's defaults, limits, and lcb_runner's extraction rule."""

from __future__ import annotations

import pytest

from selfdistill import benchmarks as B


def test_profiles_and_their_limits():
    lcb = B.get("livecodebench")
    assert lcb.grading == "lcb" and B.get("humaneval").grading == "strict"
    assert lcb.graded_by("strict").profile.timeout == 10.0 and lcb.graded_by(None) is lcb
    limits = lcb.profile.limits(memory_mb=4096)
    assert (limits.timeout, limits.memory_mb, limits.max_output_bytes) == (6.0, 4096, 64 << 20)
    with pytest.raises(B.BenchmarkError, match="unknown grading profile 'lbc'; profiles: strict, lcb"):
        lcb.graded_by("lbc")


@pytest.mark.parametrize(("reply", "code"), [
    ("```python\na = 1\n```\ntext\n```\nb = 2\n```", "b = 2"),
    ("x ```py\na = 1\n``` y", "a = 1"),
    ("<think>```python\nz = 0\n```</think>\n```python\na = 1\n```", "a = 1"),
    ("```python\nrow = 1\n\n```", "row = 1\n"),
])
def test_extraction_between_the_last_two_fence_lines(reply, code):
    assert B.extract_between_last_fences(reply) == code


@pytest.mark.parametrize("reply", ["a = 1", "```python\na = 1", "```python\n\n```", "~~~python\na = 1\n~~~", "<think>```python\na = 1\n```"])
def test_extraction_without_two_fence_lines_or_code_fails(reply):
    with pytest.raises(B.ExtractionError):
        B.extract_between_last_fences(reply)
