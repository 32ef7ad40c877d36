"""`videorft_accuracy`: how the VideoRFT / Video-R1 evaluation scores one model output against its solution.

An `evaluate` metric module shipped inside videorft_hf. It is the single home of evaluation scoring: `videorft eval`
imports the scoring functions below, and `evaluate.load` runs the same file offline from its path:

    >>> import evaluate
    >>> from videorft_hf.evaluation import metric_path
    >>> metric = evaluate.load(metric_path())  # doctest: +SKIP
    >>> metric.compute(
    ...     predictions=["<think>...</think><answer>B</answer>", "about 4 meters"],
    ...     references=["<answer>B</answer>", "<answer>4.2</answer>"],
    ...     problem_types=["multiple choice", "regression"],
    ... )  # doctest: +SKIP
    {'accuracy': 0.5, 'num_samples': 2, ...}

Rules (the paper's evaluation):

- Prediction: the first `<answer>...</answer>` span of the output, stripped. An output without one (or whose span
  is empty) is taken whole, stripped.
- Reference: the first `<answer>...</answer>` span of the solution, stripped; a solution without tags is taken whole.
- multiple choice: 1 when the stripped strings are equal (exact match), else 0.
- numerical: as the accuracy reward: 0 when exactly one side contains "." or ","; else commas are dropped, both are
  parsed as floats and 1 when they are equal after rounding to 2 decimals; unparseable -> 0.
- OCR: 1 - word error rate, clipped to [0, 1] (as the reward).
- free-form: mean of the ROUGE-1, ROUGE-2 and ROUGE-L F-measures with Porter stemming, clipped to [0, 1] (as the
  reward).
- regression (VSI-Bench's numeric questions): mean relative accuracy,
  `MRA = mean over t in {0.50, 0.55, ..., 0.95} of [|pred - gt| / |gt| < 1 - t]`; unparseable -> 0. When gt is 0 the
  relative error is 0 for pred == 0 and infinite otherwise.

Multiple choice, numerical, OCR and free-form reuse the functions of `videorft_hf.rewards` (one formula, one place);
only MRA, which the rewards do not use, is defined here.

Aggregates: `accuracy` is the mean of the per-sample scores over every sample, whatever its problem type (this is
how the paper's per-benchmark numbers are formed, VSI-Bench included: its multiple-choice samples count their exact
match and its regression samples their MRA, so for VSI-Bench, which has only these two types, it is the
sample-weighted mean of the two). `multiple_choice_accuracy` and
`mean_relative_accuracy` are reported whenever such samples are present, and `per_type` gives every type's mean.
All values are fractions in [0, 1]; `videorft eval` reports them as percentages, as the paper does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import datasets
import evaluate

from videorft_hf.prompts import PROBLEM_TYPES
from videorft_hf.rewards import extract_answer, get_accuracy_reward
from videorft_hf.rewards.accuracy import parse_number

__all__ = [
    "MRA_THRESHOLDS",
    "VideoRFTAccuracy",
    "extract_prediction",
    "mean_relative_accuracy",
    "reference_answer",
    "score_output",
    "summarize_scores",
]

# 0.50, 0.55, ..., 0.95, written as exact ratios so that 1 - t is the nearest double to the intended tolerance.
MRA_THRESHOLDS: tuple[float, ...] = tuple(k / 20 for k in range(10, 20))
_MRA_TOLERANCES: tuple[float, ...] = tuple((20 - k) / 20 for k in range(10, 20))

_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_SCORERS = {lenient: get_accuracy_reward(lenient_multiple_choice=lenient) for lenient in (False, True)}

_DESCRIPTION = __doc__
_CITATION = """\
@article{wang2025videorft,
  title={VideoRFT: Incentivizing Video Reasoning Capability in MLLMs via Reinforced Fine-Tuning},
  author={Wang, Qi and Yu, Yanrui and Yuan, Ye and Mao, Rui and Zhou, Tianfei},
  journal={arXiv preprint arXiv:2505.12434},
  year={2025}
}
"""
_INPUTS_DESCRIPTION = """
Args:
    predictions (`list[str]`): raw model outputs (`<think>...</think><answer>...</answer>`, or any text).
    references (`list[str]`): solutions, `<answer>...</answer>` (or the bare answer).
    problem_types (`list[str]`): one of "multiple choice", "numerical", "OCR", "free-form", "regression" per sample.
    return_scores (`bool`, default False): also return `scores` and `extracted` (the prediction each was scored on).
    lenient_multiple_choice (`bool`, default False): also accept "(B)", "B.", "b", "B. text" for option B (the paper
        compares the strings exactly).
Returns:
    accuracy: mean per-sample score over all samples (None when there are none).
    num_samples: number of samples.
    per_type: `{problem_type: {"accuracy": ..., "num_samples": ...}}` for every type present.
    multiple_choice_accuracy: mean over multiple-choice samples (present when there are some).
    mean_relative_accuracy: mean MRA over regression samples (present when there are some).
Example:
    >>> metric.compute(predictions=["<answer>A</answer>"], references=["<answer>A</answer>"],
    ...                problem_types=["multiple choice"])["accuracy"]  # doctest: +SKIP
    1.0
"""


# --------------------------------------------------------------------------------------------- per sample
def extract_prediction(output: str) -> str:
    """The answer `output` is scored on: its first `<answer>` span, stripped, or the whole output when it has none.

    Args:
        output: a model output.

    Returns:
        The prediction text.

    Example:
        >>> extract_prediction("<think>hmm</think><answer> B </answer>")
        'B'
        >>> extract_prediction("  The answer is B. ")
        'The answer is B.'
    """
    answer = extract_answer(output)
    return answer if answer else output.strip()


def reference_answer(solution: str) -> str:
    """The ground truth of a solution: its first `<answer>` span, stripped; a solution without tags is used whole.

    Example:
        >>> reference_answer("<answer>3.5</answer>"), reference_answer(" 3.5 ")
        ('3.5', '3.5')
    """
    start = solution.find(_ANSWER_OPEN)
    if start >= 0 and solution.find(_ANSWER_CLOSE, start + len(_ANSWER_OPEN)) >= 0:
        return extract_answer(solution)
    return solution.strip()


def mean_relative_accuracy(prediction: float, truth: float) -> float:
    """MRA: the share of thresholds t in {0.50, 0.55, ..., 0.95} with `|prediction - truth| / |truth| < 1 - t`.

    Args:
        prediction: the predicted number.
        truth: the ground-truth number. When it is 0, the relative error is 0 for a prediction of 0, else infinite.

    Returns:
        A multiple of 0.1 in [0, 1].

    Example:
        >>> mean_relative_accuracy(4.2, 4.0)  # relative error 0.05: below 1 - t for t = 0.50 ... 0.90
        0.9
        >>> mean_relative_accuracy(6.0, 4.0)  # relative error 0.5: below no tolerance (the test is strict)
        0.0
    """
    if truth == 0:
        relative = 0.0 if prediction == 0 else math.inf
    else:
        relative = abs(prediction - truth) / abs(truth)
    return sum(relative < tolerance for tolerance in _MRA_TOLERANCES) / len(_MRA_TOLERANCES)


def score_output(
    output: str, solution: str, problem_type: str, lenient_multiple_choice: bool = False
) -> tuple[str, float]:
    """Scores one model output by its problem type, with the paper's evaluation rules (see the module docstring).

    Args:
        output: the model's output text.
        solution: the record's solution (`<answer>...</answer>`).
        problem_type: one of `videorft_hf.prompts.PROBLEM_TYPES`.
        lenient_multiple_choice: accept "(B)", "B.", "b", "B. text" for option B.

    Returns:
        `(prediction, score)`: the text that was scored (see `extract_prediction`) and its score in [0, 1].

    Raises:
        ValueError: for an unknown problem type.

    Example:
        >>> score_output("<think>...</think><answer>3.8</answer>", "<answer>4</answer>", "regression")
        ('3.8', 0.9)
        >>> score_output("B", "<answer>B</answer>", "multiple choice")  # no answer tag: the whole output
        ('B', 1.0)
    """
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"Unknown problem_type {problem_type!r}; expected one of {list(PROBLEM_TYPES)}.")
    prediction = extract_prediction(output)
    if problem_type == "regression":
        predicted, truth = parse_number(prediction), parse_number(reference_answer(solution))
        if predicted is None or truth is None:
            return prediction, 0.0
        return prediction, mean_relative_accuracy(predicted, truth)
    # The accuracy reward reads the first <answer> span: hand it exactly the prediction chosen above.
    wrapped = _ANSWER_OPEN + prediction + _ANSWER_CLOSE
    solution = _ANSWER_OPEN + reference_answer(solution) + _ANSWER_CLOSE
    (score,) = _SCORERS[bool(lenient_multiple_choice)]([wrapped], solution=[solution], problem_type=[problem_type])
    return prediction, float(score)


# --------------------------------------------------------------------------------------------- aggregates
def summarize_scores(scores: Sequence[float], problem_types: Sequence[str]) -> dict:
    """Aggregates per-sample scores: overall mean, mean per problem type, and the VSI-Bench style pair.

    Args:
        scores: per-sample scores in [0, 1] (from `score_output`).
        problem_types: the samples' problem types, in the same order.

    Returns:
        `{"accuracy", "num_samples", "per_type"}`, plus `multiple_choice_accuracy` / `mean_relative_accuracy` when
        multiple-choice / regression samples are present. Means are None when there is no sample.

    Example:
        >>> summary = summarize_scores([1.0, 0.0, 0.7], ["multiple choice", "multiple choice", "regression"])
        >>> round(summary["accuracy"], 4), summary["multiple_choice_accuracy"], summary["mean_relative_accuracy"]
        (0.5667, 0.5, 0.7)
    """
    if len(scores) != len(problem_types):
        raise ValueError(f"{len(scores)} scores but {len(problem_types)} problem types.")
    by_type: dict[str, list[float]] = {}
    for score, problem_type in zip(scores, problem_types, strict=True):
        by_type.setdefault(problem_type, []).append(float(score))
    summary: dict = {
        "accuracy": math.fsum(scores) / len(scores) if len(scores) else None,
        "num_samples": len(scores),
        "per_type": {
            problem_type: {"accuracy": math.fsum(values) / len(values), "num_samples": len(values)}
            for problem_type, values in sorted(by_type.items())
        },
    }
    if "multiple choice" in by_type:
        summary["multiple_choice_accuracy"] = summary["per_type"]["multiple choice"]["accuracy"]
    if "regression" in by_type:
        summary["mean_relative_accuracy"] = summary["per_type"]["regression"]["accuracy"]
    return summary


# --------------------------------------------------------------------------------------------- evaluate module
@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS_DESCRIPTION)
class VideoRFTAccuracy(evaluate.Metric):
    """The VideoRFT evaluation score of model outputs (multiple choice, numerical, OCR, free-form, regression/MRA)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Value("string"),
                    "problem_types": datasets.Value("string"),
                }
            ),
            reference_urls=["https://arxiv.org/abs/2505.12434", "https://arxiv.org/abs/2412.14171"],
        )

    def _compute(
        self,
        predictions: Sequence[str],
        references: Sequence[str],
        problem_types: Sequence[str],
        return_scores: bool = False,
        lenient_multiple_choice: bool = False,
    ) -> dict:
        scored = [
            score_output(output, solution, problem_type, lenient_multiple_choice)
            for output, solution, problem_type in zip(predictions, references, problem_types, strict=True)
        ]
        scores = [score for _, score in scored]
        summary = summarize_scores(scores, list(problem_types))
        if return_scores:
            summary["scores"] = scores
            summary["extracted"] = [prediction for prediction, _ in scored]
        return summary
