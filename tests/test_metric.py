"""The `videorft_accuracy` metric: hand-made predictions scored by REFERENCE section 6, and `evaluate.load` offline."""

import math

import numpy as np
import pytest

from videorft_hf.metrics.videorft_accuracy.videorft_accuracy import (
    MRA_THRESHOLDS,
    extract_prediction,
    mean_relative_accuracy,
    reference_answer,
    score_output,
    summarize_scores,
)
from videorft_hf.rewards import accuracy_reward


def _reference_mra(prediction: float, truth: float) -> float:
    """REFERENCE section 6, written independently: mean over t in 0.50, 0.55, ..., 0.95 of [|p - g| / |g| < 1 - t]."""
    thresholds = np.linspace(0.50, 0.95, 10)
    return float(np.mean(abs(prediction - truth) / abs(truth) < 1 - thresholds))


def test_mra_thresholds_are_the_ten_of_the_reference():
    assert len(MRA_THRESHOLDS) == 10
    assert MRA_THRESHOLDS[0] == 0.5 and MRA_THRESHOLDS[-1] == 0.95
    assert all(math.isclose(b - a, 0.05) for a, b in zip(MRA_THRESHOLDS[:-1], MRA_THRESHOLDS[1:], strict=True))


@pytest.mark.parametrize(
    ("prediction", "truth", "expected"),
    [
        (4.0, 4.0, 1.0),  # exact
        (4.1, 4.0, 1.0),  # relative error 0.025 is below the smallest tolerance 0.05
        (4.2, 4.0, 0.9),  # 0.05: not below 0.05 (strict), below the other nine
        (5.0, 4.0, 0.5),  # 0.25: below 0.50, 0.45, 0.40, 0.35, 0.30
        (3.0, 4.0, 0.5),  # the error is symmetric
        (6.0, 4.0, 0.0),  # 0.5: below no tolerance, the largest is 0.5 and the test is strict
        (100.0, 4.0, 0.0),
        (-4.0, 4.0, 0.0),
        (-4.2, -4.0, 0.9),  # |gt| in the denominator
        (0.0, 0.0, 1.0),  # gt 0: right only when exact
        (0.1, 0.0, 0.0),
    ],
)
def test_mean_relative_accuracy_by_hand(prediction, truth, expected):
    assert mean_relative_accuracy(prediction, truth) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prediction", "truth"), [(1.3, 1.0), (2.77, 3.1), (12.0, 10.0), (0.71, 1.0), (9.5, 8.0), (41.0, 37.0)]
)
def test_mean_relative_accuracy_matches_an_independent_implementation(prediction, truth):
    assert mean_relative_accuracy(prediction, truth) == pytest.approx(_reference_mra(prediction, truth))


def test_prediction_is_the_answer_span_or_the_whole_output():
    assert extract_prediction("<think>Let me think.</think>\n<answer> C </answer>") == "C"
    assert extract_prediction("  C  ") == "C"  # no answer tag: taken whole
    assert extract_prediction("The answer is C.") == "The answer is C."
    assert extract_prediction("<answer></answer>") == "<answer></answer>"  # an empty span is no answer
    assert extract_prediction("<answer>C") == "<answer>C"  # unclosed: no answer span
    assert reference_answer("<answer>12</answer>") == "12"
    assert reference_answer("12") == "12"


@pytest.mark.parametrize(
    ("output", "solution", "problem_type", "expected"),
    [
        ("<think>..</think><answer>B</answer>", "<answer>B</answer>", "multiple choice", 1.0),
        ("<answer>A</answer>", "<answer>B</answer>", "multiple choice", 0.0),
        ("<answer>B.</answer>", "<answer>B</answer>", "multiple choice", 0.0),  # exact match, as the paper
        ("B", "<answer>B</answer>", "multiple choice", 1.0),  # no tag: the whole output
        ("The answer is B", "<answer>B</answer>", "multiple choice", 0.0),
        ("<answer>3.10</answer>", "<answer>3.1</answer>", "numerical", 1.0),
        ("<answer>3</answer>", "<answer>3.0</answer>", "numerical", 0.0),  # exactly one side has "."
        ("<answer>1,000</answer>", "<answer>1000</answer>", "numerical", 0.0),  # exactly one side has ","
        ("<answer>1,000</answer>", "<answer>1,000</answer>", "numerical", 1.0),
        ("<answer>three</answer>", "<answer>3</answer>", "numerical", 0.0),
        ("7", "<answer>7</answer>", "numerical", 1.0),
        ("<answer>the red car</answer>", "<answer>the red car</answer>", "OCR", 1.0),
        ("<answer>the blue car</answer>", "<answer>the red car</answer>", "OCR", 2 / 3),
        ("<answer>a b c d e</answer>", "<answer>x</answer>", "OCR", 0.0),  # WER above 1 is clipped
        ("<answer>a red car</answer>", "<answer>a red car</answer>", "free-form", 1.0),
        ("<answer>4.2</answer>", "<answer>4</answer>", "regression", 0.9),
        ("<answer>5</answer>", "<answer>4</answer>", "regression", 0.5),
        ("<answer>about four</answer>", "<answer>4</answer>", "regression", 0.0),  # unparseable
        ("<answer>nan</answer>", "<answer>4</answer>", "regression", 0.0),
        ("4", "<answer>4</answer>", "regression", 1.0),
    ],
)
def test_score_output_by_hand(output, solution, problem_type, expected):
    _, score = score_output(output, solution, problem_type)
    assert score == pytest.approx(expected)


def test_free_form_is_the_mean_of_rouge_1_2_l():
    # reference "the cat sat", prediction "the cat": ROUGE-1 F = 0.8, ROUGE-2 F = 2/3, ROUGE-L F = 0.8
    _, score = score_output("<answer>the cat</answer>", "<answer>the cat sat</answer>", "free-form")
    assert score == pytest.approx((0.8 + 2 / 3 + 0.8) / 3)


def test_lenient_multiple_choice_is_opt_in():
    assert score_output("<answer>(b)</answer>", "<answer>B</answer>", "multiple choice")[1] == 0.0
    assert score_output("<answer>(b)</answer>", "<answer>B</answer>", "multiple choice", True)[1] == 1.0


@pytest.mark.parametrize(
    ("answer", "truth", "problem_type"),
    [
        ("3.10", "3.1", "numerical"),
        ("3", "3.0", "numerical"),
        ("12", "12", "numerical"),
        ("B", "B", "multiple choice"),
        ("b", "B", "multiple choice"),
        ("the red car", "the big red car", "OCR"),
        ("a dog runs in a park", "the dog is running in the park", "free-form"),
    ],
)
def test_tagged_outputs_score_as_the_accuracy_reward(answer, truth, problem_type):
    # One formula, one place: on outputs with an answer tag, evaluation and the RL reward agree (not for regression,
    # where evaluation uses MRA).
    output, solution = f"<think>x</think><answer>{answer}</answer>", f"<answer>{truth}</answer>"
    (reward,) = accuracy_reward([output], solution=[solution], problem_type=[problem_type])
    assert score_output(output, solution, problem_type)[1] == pytest.approx(reward)


def test_unknown_problem_type_raises():
    with pytest.raises(ValueError, match="problem_type"):
        score_output("<answer>A</answer>", "<answer>A</answer>", "yes/no")


def test_summary_vsi_bench_combined_is_the_sample_weighted_mean():
    types = ["multiple choice", "multiple choice", "multiple choice", "regression"]
    summary = summarize_scores([1.0, 0.0, 1.0, 0.2], types)
    assert summary["multiple_choice_accuracy"] == pytest.approx(2 / 3)
    assert summary["mean_relative_accuracy"] == pytest.approx(0.2)
    assert summary["accuracy"] == pytest.approx((3 * (2 / 3) + 1 * 0.2) / 4)
    assert summary["per_type"]["regression"] == {"accuracy": pytest.approx(0.2), "num_samples": 1}
    assert summarize_scores([], [])["accuracy"] is None
    assert "mean_relative_accuracy" not in summarize_scores([1.0], ["numerical"])


def test_evaluate_load_from_the_package_path_offline():
    import evaluate

    from videorft_hf.evaluation import metric_path

    metric = evaluate.load(metric_path())
    result = metric.compute(
        predictions=["<think>.</think><answer>A</answer>", "B", "<answer>4.2</answer>", "<answer>7</answer>"],
        references=["<answer>A</answer>", "<answer>C</answer>", "<answer>4</answer>", "<answer>7</answer>"],
        problem_types=["multiple choice", "multiple choice", "regression", "numerical"],
        return_scores=True,
    )
    assert result["scores"] == [1.0, 0.0, 0.9, 1.0]
    assert result["extracted"] == ["A", "B", "4.2", "7"]
    assert result["accuracy"] == pytest.approx(2.9 / 4)
    assert result["multiple_choice_accuracy"] == 0.5
    assert result["mean_relative_accuracy"] == pytest.approx(0.9)
    assert result["per_type"]["numerical"] == {"accuracy": 1.0, "num_samples": 1}
