import pytest

from videorft_hf.prompts import PROBLEM_TYPES, QUESTION_TEMPLATE, TYPE_TEMPLATE, build_prompt_text

# REFERENCE section 3, verbatim: the released checkpoints were trained on these strings.
EXPECTED_QUESTION_TEMPLATE = (
    "{Question}\nPlease think about this question as if you were a human pondering deeply. Engage in an internal "
    "dialogue using expressions such as 'let me think', 'wait', 'Hmm', 'oh, I see', 'let's break it down', etc, or "
    "other natural language thought expressions It's encouraged to include self-reflection or verification in the "
    "reasoning process. Provide your detailed reasoning between the <think> </think> tags, and then give your final "
    "answer between the <answer> </answer> tags."
)
EXPECTED_TYPES = {
    "multiple choice": " Please provide only the single option letter (e.g., A, B, C, D, etc.) within the "
    "<answer> </answer> tags.",
    "numerical": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
    "OCR": " Please transcribe text from the image/video clearly and provide your text answer within the "
    "<answer> </answer> tags.",
    "free-form": " Please provide your text answer within the <answer> </answer> tags.",
    "regression": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
}


def test_templates_are_verbatim():
    assert QUESTION_TEMPLATE == EXPECTED_QUESTION_TEMPLATE
    assert TYPE_TEMPLATE == EXPECTED_TYPES
    assert set(PROBLEM_TYPES) == set(EXPECTED_TYPES)


def test_multiple_choice_appends_options_one_per_line():
    text = build_prompt_text("What colour is the ball?", "multiple choice", ["A. red", "B. blue"])
    assert text.startswith("What colour is the ball?\nA. red\nB. blue\nPlease think about")
    assert text.endswith(EXPECTED_TYPES["multiple choice"])


def test_options_ignored_for_other_types_and_unknown_type_rejected():
    assert build_prompt_text("How many?", "numerical", ["A. 1"]).startswith("How many?\nPlease think")
    with pytest.raises(ValueError, match="Unknown problem_type 'essay'"):
        build_prompt_text("x", "essay")
