"""What a reward function reads from trl's arguments: a completion's text, its tagged spans, and dataset columns.

trl passes `completions` as plain strings or as conversational messages, and every dataset column as a keyword
argument with one entry per completion. The tag scans here are linear: the release's regular expressions backtrack
catastrophically on long adversarial text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# A reward in trl's signature: `reward(completions, **kwargs)`, one float (or None: cannot score) per completion.
RewardFunc = Callable[..., list[float | None]]

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"


def completion_text(completion: Any) -> str:
    """Returns the text of one completion as trl passes it: a string, or a list of messages.

    For a list of messages the last assistant message is used (with tool calls, the final answer is there); its
    `content` may be a string or a list of content blocks, whose text blocks are joined.

    Args:
        completion: `"text"`, `[{"role": "assistant", "content": "text"}]`, or content blocks
            `[{"role": "assistant", "content": [{"type": "text", "text": "text"}]}]`.

    Returns:
        The completion's text; `""` when it has none.

    Example:
        >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}])
        'hi'
    """
    if isinstance(completion, str):
        return completion
    message = completion
    if isinstance(completion, (list, tuple)):
        if not completion:
            return ""
        assistant = [m for m in completion if isinstance(m, dict) and m.get("role") == "assistant"]
        message = assistant[-1] if assistant else completion[-1]
    content = message.get("content") if isinstance(message, dict) else message
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif (
                isinstance(block, dict) and block.get("type", "text") == "text" and isinstance(block.get("text"), str)
            ):
                parts.append(block["text"])
        return "".join(parts)
    return ""


def first_span(text: str, open_tag: str, close_tag: str) -> str | None:
    """Content between the first `open_tag` and the first `close_tag` after it, or None.

    Equals `re.search(open_tag + "(.*?)" + close_tag, text, re.DOTALL).group(1)` (None when there is no match) in
    linear time: if the first opening tag has no closing tag after it, no later one has. The tags used here cannot
    overlap themselves or each other.

    Example:
        >>> first_span("<think>a</think><think>b</think>", THINK_OPEN, THINK_CLOSE)
        'a'
    """
    start = text.find(open_tag)
    if start < 0:
        return None
    start += len(open_tag)
    end = text.find(close_tag, start)
    if end < 0:
        return None
    return text[start:end]


def extract_answer(text: str) -> str:
    """The first `<answer>` span, stripped; `""` when there is none.

    Equals the release's `re.search(r"<answer>\\s*(.*?)\\s*</answer>", text, re.DOTALL).group(1).strip()` (or `""`),
    whose nested whitespace quantifiers take cubic time on an unclosed `<answer>` followed by whitespace; this scan
    is linear.

    Args:
        text: a completion or a solution.

    Returns:
        The answer text.

    Example:
        >>> extract_answer("<think>hmm</think><answer> B </answer>")
        'B'
    """
    span = first_span(text, ANSWER_OPEN, ANSWER_CLOSE)
    return "" if span is None else span.strip()


def completion_column(kwargs: dict, name: str, size: int) -> list:
    """The dataset column `name` from a reward's keyword arguments, one value per completion (Nones when absent).

    Raises:
        ValueError: the column does not hold one value per completion.

    Example:
        >>> completion_column({"solution": ["<answer>2</answer>"]}, "solution", 1), completion_column({}, "video", 2)
        (['<answer>2</answer>'], [None, None])
    """
    values = kwargs.get(name)
    if values is None:
        return [None] * size
    if isinstance(values, str) or len(values) != size:
        raise ValueError(
            f"The `{name}` column must hold one value per completion ({size}), got {values!r:.200}. "
            "trl repeats every dataset column for each generation; pass lists of the same length as `completions`."
        )
    return list(values)
