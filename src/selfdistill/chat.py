"""Chat formats: the messages a model is shown, the chat template that renders them, the tokens that
end its reply, and the part of a reply that answers. Prompts (sampling) and benchmarks (evaluation)
share all of it, so a model is asked and read the same way in both.

    build_messages(statement, starter_code, prompt_format) -> [{"role", "content"}, ...]   "system" or "lcb"
    chat_prompt(tokenizer, messages, date, reasoning_effort) -> str   the model's own template, its date pinned
    stop_token_ids(model_path, tokenizer) -> [int]                    what ends a reply, for both backends
    keeps_channels(tokenizer) -> bool                                 a harmony-format model (GPT-OSS)
    answer_text(reply) -> str                                         a harmony reply's final channel, else
                                                                      the reply without <think> sections
"""

from __future__ import annotations

import datetime
import re

from . import SelfdistillError

PROMPT_FORMATS = ("system", "lcb")
HARMONY_CHANNEL = "<|channel|>"  # the special token that opens a channel header in GPT-OSS's harmony format

# The paper does not print its sampling prompt; this is our wording of what it describes: a system
# message asking for a Python solution in a markdown code block, with the problem as the user message.
SYSTEM_PROMPT = (
    "You are an expert Python programmer. Solve the user's programming problem. "
    "Reply with a complete, correct Python solution in a single markdown code block (```python ... ```)."
)

# The paper's evaluation prompt, quoted exactly from apple/ml-ssd, evaluation/benchmark.py
# (LCB_PROMPT_WITH_STARTER_CODE, LCB_PROMPT_WITHOUT_STARTER_CODE): LiveCodeBench's user-only prompt
# (lcb_runner/prompts/code_generation.py, get_codeqwen_question_template_answer) as the paper ran it. It
# differs from LiveCodeBench's own where the paper's numbers were measured with the difference, so it is
# kept: the starter-code form ends "delimiters." with a stray quote and never closes its code fence; the
# stdin form indents "# YOUR CODE HERE" by two spaces and ends at the closing fence.
LCB_INSTRUCTION = (
    "You will be given a question (problem specification) and will generate a correct Python program that "
    "matches the specification and passes all tests. You will NOT return anything except for the program."
)
LCB_WITH_STARTER = (
    "You will use the following starter code to write the solution to the problem and enclose your code "
    'within delimiters."'
)
LCB_STDIN = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test on the "
    "sample inputs). Enclose your code within delimiters as follows. Ensure that when the python program runs, "
    "it reads the inputs, runs the algorithm and writes output to STDOUT."
)


class ChatError(SelfdistillError, ValueError):
    """A prompt that cannot be built: an unknown format, a model without a chat template, a bad date."""


class ExtractionError(SelfdistillError, ValueError):
    """The reply holds no code to grade: graded as status `extraction_failed`, never a crash."""


def build_messages(statement: str, starter_code: str | None = None, prompt_format: str = "system") -> list[dict]:
    """Chat messages for one problem. "system": SYSTEM_PROMPT + the problem (and its starter code) as
    the user message. "lcb": the paper's evaluation prompt (LiveCodeBench's single user message), in its
    starter-code form when there is starter code, else its stdin form."""
    if prompt_format == "system":
        user = statement if not starter_code else f"{statement}\n\nStarter code:\n```python\n{starter_code}\n```"
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
    if prompt_format == "lcb":
        if starter_code:
            user = f"{LCB_INSTRUCTION}\n\nQuestion: {statement}\n\n{LCB_WITH_STARTER}\n```python\n{starter_code}\n"
        else:
            user = f"{LCB_INSTRUCTION}\n\nQuestion: {statement}\n\n{LCB_STDIN}\n```python\n  # YOUR CODE HERE\n```"
        return [{"role": "user", "content": user}]
    raise ChatError(f"unknown prompt_format {prompt_format!r}; choose one of {', '.join(PROMPT_FORMATS)}")


def chat_prompt(tokenizer, messages: list[dict], date: str | None = None, reasoning_effort: str | None = None) -> str:
    """The model's own chat template, ready for the assistant's reply. A template that stamps today's
    date (GPT-OSS's strftime_now) gets `date` (YYYY-MM-DD) instead, so a prompt is the same whatever day
    it is rendered on (sampling, training, resuming, evaluating base and SSD); None = today.
    `reasoning_effort` goes to templates that read it (GPT-OSS: low, medium, high); None = theirs."""
    if not tokenizer.chat_template:
        raise ChatError(f"{tokenizer.name_or_path} has no chat template; ssd needs an instruct/chat model")
    args = {}
    if date is not None:
        try:
            args["strftime_now"] = datetime.date.fromisoformat(date).strftime  # replaces the template's clock
        except ValueError:
            raise ChatError(f"chat_date {date!r}: expected a date YYYY-MM-DD") from None
    if reasoning_effort is not None:
        args["reasoning_effort"] = reasoning_effort
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **args)


def keeps_channels(tokenizer) -> bool:
    """Harmony-format models (GPT-OSS) mark their reasoning and their answer with special tokens
    (<|channel|>analysis, <|channel|>final); their reply text keeps those tokens, so that grading can
    find the answer (final_channel). Other replies are text without special tokens."""
    return HARMONY_CHANNEL in tokenizer.get_vocab()


def stop_token_ids(model_path: str, tokenizer) -> list[int]:
    """Tokens that end a reply: the tokenizer's EOS and every eos_token_id of generation_config.json
    (Qwen lists <|im_end|> and <|endoftext|>), the same set for both backends."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:  # the model has no generation_config.json
        eos = None
    return sorted(({tokenizer.eos_token_id} | set(eos if isinstance(eos, list) else [eos])) - {None})


# ---------------------------------------------------------------------------- replies

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def strip_thinking(reply: str) -> str:
    """Remove <think>...</think>. A reply that opens with thinking but whose template put the opening
    tag in the prompt has only the closing tag: keep what follows it. An unclosed <think> is all thought."""
    reply = _THINK.sub("", reply)
    if "</think>" in reply:
        reply = reply.rsplit("</think>", 1)[1]
    if "<think>" in reply:
        reply = reply.split("<think>", 1)[0]
    return reply


# A final-channel message of GPT-OSS's harmony format: its header (an optional <|constrain|> type
# included), then the message up to <|end|>, <|return|> or <|call|>, or to the end of a cut reply.
_FINAL = re.compile(
    r"<\|channel\|>final(?:[^<]|<\|constrain\|>)*<\|message\|>(.*?)(?:<\|(?:end|return|call)\|>|$)", re.DOTALL
)


def final_channel(reply: str) -> str:
    """The answer of a harmony-format reply (GPT-OSS): its last final-channel message. The analysis
    channel is reasoning, never graded; a reply cut off before a final channel has no answer."""
    finals = _FINAL.findall(reply)
    if not finals:
        raise ExtractionError("no final channel: the reply ends while reasoning (analysis channel)")
    return finals[-1]


def answer_text(reply: str) -> str:
    """The part of a reply that answers, for either extraction rule: a harmony reply's final channel
    (GPT-OSS), else the reply without its <think> sections."""
    return final_channel(reply) if HARMONY_CHANNEL in reply else strip_thinking(reply)
