"""`format_reward`: the completion is a `<think>` block, then an `<answer>` block, and nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .completions import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, completion_text


def _is_well_formed(text: str) -> bool:
    """`re.fullmatch(r"<think>.*?</think>\\s*<answer>.*?</answer>", text, re.DOTALL) is not None`, in linear time.

    The regular expression backtracks through every `</think>` ... `<answer>` pair and rescans the rest of the text
    for each, which is quadratic on text with many such pairs. Here: the text must start with `<think>` and end with
    `</answer>`, and some `<answer>` that ends before the final `</answer>` must be preceded, after a (maximal) run of
    whitespace, by a `</think>` that starts after the opening `<think>`. Each whitespace run precedes at most one
    `<answer>`, so the backward walks add up to the text's length.
    """
    if not (text.startswith(THINK_OPEN) and text.endswith(ANSWER_CLOSE)):
        return False
    last_answer_start = len(text) - len(ANSWER_CLOSE) - len(ANSWER_OPEN)
    earliest = len(THINK_OPEN) + len(THINK_CLOSE)
    position = text.find(ANSWER_OPEN, earliest, last_answer_start + len(ANSWER_OPEN))
    while position >= 0:
        k = position
        while k > earliest and text[k - 1].isspace():  # str.isspace is what `\s` matches in a str pattern
            k -= 1
        if text.startswith(THINK_CLOSE, k - len(THINK_CLOSE)) and k - len(THINK_CLOSE) >= len(THINK_OPEN):
            return True
        position = text.find(ANSWER_OPEN, position + 1, last_answer_start + len(ANSWER_OPEN))
    return False


def format_reward(completions: Sequence[Any], **kwargs) -> list[float]:
    """1.0 when the whole completion is `<think>...</think>`, optional whitespace, `<answer>...</answer>`; else 0.0.

    Exactly `re.fullmatch(r"<think>.*?</think>\\s*<answer>.*?</answer>", text, re.DOTALL)`, checked in linear time
    (the regular expression is quadratic on adversarial text). Any text before `<think>` or after `</answer>`
    fails.

    Args:
        completions: plain strings or conversational completions (see `completion_text`).
        **kwargs: other columns and trl's extras; ignored.

    Returns:
        One float in {0.0, 1.0} per completion.

    Example:
        >>> format_reward(["<think>a</think> <answer>b</answer>", "x<think>a</think><answer>b</answer>"])
        [1.0, 0.0]
    """
    return [1.0 if _is_well_formed(completion_text(c)) else 0.0 for c in completions]
