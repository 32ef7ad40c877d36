"""The checks on model outputs: a description parsed and validated against `DESCRIPTION_SCHEMA`, a chain of thought
normalised to `<think>...</think><answer>...</answer>` (`parse_cot`), and reasoning that frames itself as read from a
description (`find_description_framing`)."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

# The structured representation of stage 1 (the keys the describe prompts name).
DESCRIPTION_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "VideoRFT structured video representation",
    "type": "object",
    "required": ["caption", "frames"],
    "properties": {
        "caption": {"type": "string", "minLength": 1},
        "frames": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": [
                    "timestamp",
                    "caption",
                    "objects",
                    "actions",
                    "scene",
                    "spatial_relations",
                    "interactions",
                ],
                "properties": {
                    "timestamp": {"type": "number", "minimum": 0},
                    "caption": {"type": "string"},
                    "objects": {"type": "array", "items": {"type": "string"}},
                    "actions": {"type": "array", "items": {"type": "string"}},
                    "scene": {"type": "string"},
                    "spatial_relations": {"type": "array", "items": {"type": "string"}},
                    "interactions": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}

# Phrases that give away a CoT written from a text description rather than from watching (checked in the filter).
_DESCRIPTION_FRAMING = re.compile(
    r"\b(?:according to|based on|from|in|as (?:stated|mentioned|described|noted) in)\s+the\s+"
    r"(?:(?:provided|given|video|image|structured|textual)\s+)*"
    r"(?:description|caption|captions|transcript|annotations?)\b"
    r"|\bthe\s+(?:(?:provided|given|video|image|structured)\s+)*(?:description|caption)\s+"
    r"(?:says|said|states|mentions|notes|indicates|describes|tells|lists)\b"
    r"|\bstructured representation\b"
    r"|\b(?:provided|given)\s+(?:description|caption|captions|text|timestamps)\b",
    re.IGNORECASE,
)


_FENCE = re.compile(r"^```[A-Za-z0-9_-]*[ \t]*\n?(.*?)\n?```$", re.DOTALL)


@functools.cache
def description_validator():
    """The jsonschema validator of `DESCRIPTION_SCHEMA` (an `ImportError` naming the extra when jsonschema is missing)."""
    try:
        import jsonschema
    except ImportError:
        raise ImportError(
            "The describe stage validates descriptions with jsonschema: pip install 'videorft_hf[curate]' "
            "(or pip install jsonschema)."
        ) from None
    return jsonschema.Draft202012Validator(DESCRIPTION_SCHEMA)


def parse_description(text: str) -> tuple[dict | None, str | None, str | None]:
    """Parses a describe output and validates it against `DESCRIPTION_SCHEMA`.

    Lenient where models commonly are: surrounding whitespace, a Markdown code fence, or text around one JSON object
    are tolerated; everything else must be right.

    Args:
        text: the model's output.

    Returns:
        `(description, None, None)` when valid, else `(None, reason, detail)` with reason "describe.invalid_json"
        or "describe.schema" and a detail saying what is wrong.

    Example:
        >>> parse_description('{"caption": "A dog runs."}')[1:]
        ('describe.schema', "(top level): 'frames' is a required property")
    """
    validator = description_validator()
    import jsonschema  # importable: description_validator checked it

    stripped = text.strip()
    if not stripped:
        return None, "describe.invalid_json", "the output is empty"
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1).strip()
    start, end = stripped.find("{"), stripped.rfind("}")
    candidate = stripped[start : end + 1] if 0 <= start < end else stripped
    try:
        value = json.loads(candidate)
    except json.JSONDecodeError as error:
        return (
            None,
            "describe.invalid_json",
            f"not valid JSON ({error.msg} at character {error.pos}): {stripped[:80]!r}",
        )
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        return None, "describe.schema", f"{where}: {error.message}"[:300]
    return value, None, None


def parse_cot(text: str, reasoning: str | None = None) -> tuple[str | None, str | None]:
    """Checks a reason / revise output and returns it normalised to `<think>...</think>\\n<answer>...</answer>`.

    Text before `<think>` and after `</answer>` (chatty preambles) is dropped; anything else must be right: one
    non-empty think block, then only whitespace, then one non-empty answer. When the output has no `<think>` but the
    server returned a separate reasoning channel (reasoning models behind vLLM's reasoning parser or hosted APIs),
    that reasoning becomes the think block.

    Args:
        text: the model's output.
        reasoning: the response's separate reasoning text, if any.

    Returns:
        `(normalised, None)`, or `(None, what is wrong)`.

    Example:
        >>> parse_cot("Sure! <think>Two cars pass.</think> <answer>2</answer>")
        ('<think>Two cars pass.</think>\\n<answer>2</answer>', None)
        >>> parse_cot("The answer is 2.")
        (None, 'no <think>...</think> block')
    """
    text = text.strip()
    if "<think>" not in text and reasoning and reasoning.strip():
        text = f"<think>{reasoning.strip()}</think>{text}"
    start = text.find("<think>")
    if start < 0:
        return None, "no <think>...</think> block"
    close = text.find("</think>", start)
    if close < 0:
        return None, "the <think> block is not closed with </think>"
    think = text[start + len("<think>") : close].strip()
    if not think:
        return None, "the <think> block is empty"
    if "<think>" in think or "<answer>" in think:
        return None, "the <think> block holds another <think> or an <answer>"
    rest = text[close + len("</think>") :]
    begin = rest.find("<answer>")
    if begin < 0:
        return None, "no <answer>...</answer> after </think>"
    if rest[:begin].strip():
        return None, "text between </think> and <answer>"
    finish = rest.find("</answer>", begin)
    if finish < 0:
        return None, "the <answer> block is not closed with </answer>"
    answer = rest[begin + len("<answer>") : finish].strip()
    if not answer:
        return None, "the <answer> block is empty"
    return f"<think>{think}</think>\n<answer>{answer}</answer>", None


def find_description_framing(text: str) -> str | None:
    """The first phrase of `text` that frames the reasoning as read from a description ("according to the
    description", "the caption says", "the structured representation"), or None.

    Example:
        >>> find_description_framing("Hmm, according to the description, the cup is red.")
        'according to the description'
        >>> find_description_framing("I see a red cup on the left.") is None
        True
    """
    match = _DESCRIPTION_FRAMING.search(text)
    return match.group(0) if match else None
