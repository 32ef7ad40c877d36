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


# --------------------------------------------------------------------------------------------- CoT curation
# Prompts of `videorft curate` (videorft_hf.curation), the paper's CoT data engine. Unlike the
# templates above, they are not compatibility strings: change them freely; the curation run records a hash of them
# and refuses to resume a run made with other prompts.

# Stage 1 (a vision-language model sees the frames): the structured representation of a video. The keys named here
# are the ones `videorft_hf.curation.DESCRIPTION_SCHEMA` requires.
CURATION_DESCRIBE_VIDEO_PROMPT = (
    "You are given {num_frames} frames sampled in temporal order from a video of {duration:.1f} seconds, taken at "
    "these timestamps (in seconds): {timestamps}.\n"
    "Write a structured representation of the video as a single JSON object with exactly these keys:\n"
    '- "caption": a detailed paragraph describing the whole video;\n'
    '- "frames": a list of the important moments in temporal order, each an object with the keys "timestamp" '
    '(seconds, a number), "caption" (what is visible at that moment), "objects" (a list of strings), "actions" '
    '(a list of strings), "scene" (a string), "spatial_relations" (a list of strings such as "the cup is to the '
    'left of the laptop") and "interactions" (a list of strings such as "the man hands the cup to the woman").\n'
    "Describe only what is visible, with counts, colours, positions and the order of events where they can be "
    "seen; do not guess. Answer with the JSON object only: no Markdown fences, no comments, no other text."
)

CURATION_DESCRIBE_IMAGE_PROMPT = (
    "You are given an image.\n"
    "Write a structured representation of the image as a single JSON object with exactly these keys:\n"
    '- "caption": a detailed paragraph describing the whole image;\n'
    '- "frames": a list with exactly one object, for the image, with the keys "timestamp" (the number 0), "caption" '
    '(what is visible), "objects" (a list of strings), "actions" (a list of strings), "scene" (a string), '
    '"spatial_relations" (a list of strings such as "the cup is to the left of the laptop") and "interactions" '
    '(a list of strings such as "the man hands the cup to the woman").\n'
    "Describe only what is visible, with counts, colours, positions and any text that can be read; do not guess. "
    "Answer with the JSON object only: no Markdown fences, no comments, no other text."
)

# Stage 2 (a reasoning language model sees only this text): the cognition-inspired CoT prompt. `{answer_format}` is
# TYPE_TEMPLATE[problem_type], so the answer is asked for exactly as training and evaluation ask for it.
CURATION_REASON_PROMPT = (
    "Below is a detailed structured description of a {media} (a caption, then entries per moment with objects, "
    "actions, scene, spatial relations and interactions), followed by a question about it.\n\n"
    "Description:\n{description}\n\n"
    "Question:\n{question}\n\n"
    "Answer the question by thinking as a person who is watching the {media} right now, not reading about it. "
    "Think in natural first-person language ('let me think', 'wait', 'hmm', 'oh, I see', 'let's break it down') "
    "through these steps:\n"
    "1. Simulated viewing: picture what you see in the {media}{as_it_unfolds}.\n"
    "2. Task understanding: say what the question asks and which visual evidence would answer it.\n"
    "3. Selective attention: focus on the moments, objects, attributes and relations that matter for the question.\n"
    "4. Visual reasoning: reason step by step from that evidence to an answer.\n"
    "5. Reflective answering: check the answer against what you saw, verify it once more, and correct it if "
    "anything does not fit.\n"
    "Never mention a description, a caption, a text or timestamps given to you: speak only of what you see.\n"
    "Write the reasoning between <think> and </think>, then the final answer between <answer> and </answer>, with "
    "nothing before <think> and nothing after </answer>.{answer_format}"
)

# Stage 3 (a vision-language model sees the frames and the draft): visual consistency and no description framing.
CURATION_REVISE_PROMPT = (
    "Here is a question about the {media} above, and a draft reasoning written by someone who could not see it and "
    "only read a text description of it.\n\n"
    "Question:\n{question}\n\n"
    "Draft:\n{draft}\n\n"
    "Revise the draft so that it agrees with what the {media} actually shows. Correct or remove every object, "
    "attribute, count, action, position or order of events that the {media} contradicts. Remove every reference "
    "to a description, caption, text or timestamps (such as 'according to the description' or 'the caption "
    "says'): the reasoning must read as the thoughts of someone watching the {media}. Keep the draft's natural "
    "thinking style, its steps and its self-check. If the {media} shows that the draft's answer is wrong, fix the "
    "reasoning and the answer.\n"
    "Write only the revised reasoning between <think> and </think>, then the final answer between <answer> and "
    "</answer>, with nothing before <think> and nothing after </answer>.{answer_format}"
)

# Sent after an output the pipeline cannot use (invalid JSON, a broken <think>/<answer> format), as the next user turn
# of the same conversation, so that the model corrects itself instead of being resampled blindly.
CURATION_RETRY_PROMPT = (
    "Your answer cannot be used: {problem}. Answer again, following the instructions above exactly and writing "
    "nothing else."
)
