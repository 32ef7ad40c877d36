"""The only home of prompt text: training (SFT and RL) and evaluation build their prompts here.

The question and type templates are compatibility strings: the released VideoRFT checkpoints were
trained on them verbatim, so they must not be edited. The system prompt is one explicit value shared
by SFT, RL and evaluation (the research release used one in SFT and none in RL).
"""

from __future__ import annotations

from collections.abc import Sequence

QUESTION_TEMPLATE = (
    "{Question}\n"
    "Please think about this question as if you were a human pondering deeply. "
    "Engage in an internal dialogue using expressions such as 'let me think', 'wait', 'Hmm', 'oh, I see', "
    "'let's break it down', etc, or other natural language thought expressions "
    "It's encouraged to include self-reflection or verification in the reasoning process. "
    "Provide your detailed reasoning between the <think> </think> tags, "
    "and then give your final answer between the <answer> </answer> tags."
)

TYPE_TEMPLATE: dict[str, str] = {
    "multiple choice": " Please provide only the single option letter (e.g., A, B, C, D, etc.) within the <answer> </answer> tags.",
    "numerical": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
    "OCR": " Please transcribe text from the image/video clearly and provide your text answer within the <answer> </answer> tags.",
    "free-form": " Please provide your text answer within the <answer> </answer> tags.",
    "regression": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
}

PROBLEM_TYPES: tuple[str, ...] = tuple(TYPE_TEMPLATE)

# R1-style system prompt. `None` (the default) sends no system turn, which is what the released RL stage
# and evaluation used; pass this string (or your own) to every stage to use one consistently.
R1_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
    "assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think><answer> answer here </answer>"
)
DEFAULT_SYSTEM_PROMPT: str | None = None


def format_question(problem: str, problem_type: str, options: Sequence[str] | None = None) -> str:
    """Returns the question part: the problem, followed by the options one per line for multiple choice.

    This package uses the same variant (options appended, one per line) for training and evaluation, so the
    two can never drift.

    Example:
        >>> format_question("What colour?", "multiple choice", ["A. red", "B. blue"])
        'What colour?\\nA. red\\nB. blue'
    """
    if problem_type == "multiple choice" and options:
        return problem + "\n" + "\n".join(str(option) for option in options)
    return problem


def build_prompt_text(problem: str, problem_type: str, options: Sequence[str] | None = None) -> str:
    """Returns the user's text block: QUESTION_TEMPLATE filled with the question, then TYPE_TEMPLATE appended.

    Args:
        problem: the question text.
        problem_type: one of `PROBLEM_TYPES`.
        options: multiple-choice options such as `["A. red", "B. blue"]`.

    Returns:
        The text exactly as the released checkpoints were trained on.

    Raises:
        ValueError: if `problem_type` is not one of `PROBLEM_TYPES`.

    Example:
        >>> text = build_prompt_text("How many cars?", "numerical")
        >>> text.endswith("(e.g., 42 or 3.14) within the <answer> </answer> tags.")
        True
    """
    if problem_type not in TYPE_TEMPLATE:
        raise ValueError(f"Unknown problem_type {problem_type!r}; expected one of {list(PROBLEM_TYPES)}.")
    question = format_question(problem, problem_type, options)
    return QUESTION_TEMPLATE.format(Question=question) + TYPE_TEMPLATE[problem_type]
