"""Chat formats: the messages a model is shown."""

import pytest

from selfdistill.chat import LCB_STDIN, SYSTEM_PROMPT, ChatError, build_messages


def test_chat_formats():
    system = build_messages("Add two numbers.", None, "system")
    assert system == [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "Add two numbers."}]
    assert "```python\ndef add(a, b):\n```" in build_messages("Add.", "def add(a, b):", "system")[1]["content"]
    stdin = build_messages("Add two numbers.", None, "lcb")
    assert len(stdin) == 1 and stdin[0]["role"] == "user" and LCB_STDIN in stdin[0]["content"]
    # the paper's evaluation prompt word for word (apple/ml-ssd evaluation/benchmark.py), quirks included
    instruction = (
        "You will be given a question (problem specification) and will generate a correct Python program that matches "
        "the specification and passes all tests. You will NOT return anything except for the program.\n\n"
    )
    assert stdin[0]["content"] == (
        instruction
        + "Question: Add two numbers.\n\nRead the inputs from stdin solve the problem and write the answer to stdout "
        "(do not directly test on the sample inputs). Enclose your code within delimiters as follows. "
        "Ensure that when the python program runs, "
        "it reads the inputs, runs the algorithm and writes output to STDOUT.\n```python\n  # YOUR CODE HERE\n```"
    )
    starter = build_messages("Add.", "class Solution:\n    def add(self, a, b):", "lcb")[0]["content"]
    assert starter == (
        instruction + "Question: Add.\n\nYou will use the following starter code to write the solution to the problem "
        'and enclose your code within delimiters."\n```python\nclass Solution:\n    def add(self, a, b):\n'
    )
    with pytest.raises(ChatError, match="unknown prompt_format"):
        build_messages("x", None, "chatml")
