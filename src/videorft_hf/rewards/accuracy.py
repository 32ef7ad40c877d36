"""`accuracy_reward`: the answer against the row's solution, scored by the row's problem type, with its text metrics.

Per type: exact match (multiple choice), numbers equal to 2 decimals (numerical), 1 - word error rate (OCR), the
mean ROUGE-1/2/L F-measure (free-form), and a relative error (regression). Word edit distance and ROUGE-L's longest
common subsequence come from `rapidfuzz` instead of the release's quadratic Python tables, with the same values.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from ..prompts import PROBLEM_TYPES
from .completions import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    RewardFunc,
    completion_column,
    completion_text,
    extract_answer,
    first_span,
)

# Per-type accuracy goes to trl's `log_metric` under `rewards/accuracy_reward/<type>/mean` (spaces become "_"), next
# to trl's own `rewards/accuracy_reward/mean`; the share of rows with an unknown problem type under
# `rewards/accuracy_reward/unknown_problem_type_frac`.
ACCURACY_METRIC_PREFIX = "rewards/accuracy_reward"


def parse_number(text: str) -> float | None:
    """The release's `float(text.replace(",", ""))`; None when unparseable or not finite ("nan", "inf", 1e999).

    The release let NaN through, and its regression formula then paid a full reward for "nan"
    (`min(1, max(0, nan))` is 0); non-finite values are treated as unparseable instead.
    """
    try:
        value = float(text.replace(",", ""))
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def _numerical_accuracy(predicted: str, truth: str) -> float:
    # Exactly one side written with a decimal point or a thousands separator: wrong (as released).
    if (("." in truth) or ("," in truth)) != (("." in predicted) or ("," in predicted)):
        return 0.0
    truth_value, predicted_value = parse_number(truth), parse_number(predicted)
    if truth_value is None or predicted_value is None:
        return 0.0
    return 1.0 if round(truth_value, 2) == round(predicted_value, 2) else 0.0


def _regression_accuracy(predicted: str, truth: str) -> float:
    truth_value, predicted_value = parse_number(truth), parse_number(predicted)
    if truth_value is None or predicted_value is None:
        return 0.0
    relative = (abs(predicted_value - truth_value) + 1e-9) / (abs(truth_value) + 1e-9)  # may overflow to inf: fine
    return 1.0 - min(1.0, max(0.0, relative))


def _interned(*sequences: Sequence[Hashable]) -> list[list[int]]:
    """The sequences with each distinct item replaced by one integer, so that rapidfuzz compares items exactly
    (it would otherwise compare hashes of non-integer items)."""
    ids: dict[Hashable, int] = {}
    return [[ids.setdefault(item, len(ids)) for item in sequence] for sequence in sequences]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance / max(1, number of reference words), words split on whitespace.

    Args:
        reference: ground-truth text.
        hypothesis: predicted text.

    Returns:
        The word error rate (0 for identical word sequences; may exceed 1).

    Example:
        >>> word_error_rate("the red car", "the blue car")
        0.3333333333333333
    """
    from rapidfuzz.distance import Levenshtein

    reference_words, hypothesis_words = reference.split(), hypothesis.split()
    reference_ids, hypothesis_ids = _interned(reference_words, hypothesis_words)
    return Levenshtein.distance(reference_ids, hypothesis_ids) / max(1, len(reference_words))


class _CachedStemmer:
    """rouge_score's Porter stemmer (nltk, default mode) with a memo: stemming dominates ROUGE on long text."""

    def __init__(self):
        from nltk.stem import porter

        self.stem = functools.lru_cache(maxsize=1 << 16)(porter.PorterStemmer().stem)


@functools.cache
def _stemmer() -> _CachedStemmer:
    return _CachedStemmer()


def _rouge_tokens(text: str) -> list[str]:
    from rouge_score import tokenize

    return tokenize.tokenize(text, _stemmer())


def _ngram_fmeasure(reference: list, hypothesis: list, n: int) -> float:
    """rouge_score's n-gram F-measure (`_score_ngrams` over `_create_ngrams`), linear in the token counts."""
    from rouge_score.scoring import fmeasure

    reference_ngrams = Counter(zip(*(reference[i:] for i in range(n)), strict=False))
    hypothesis_ngrams = Counter(zip(*(hypothesis[i:] for i in range(n)), strict=False))
    overlap = sum(min(count, hypothesis_ngrams[ngram]) for ngram, count in reference_ngrams.items())
    precision = overlap / max(sum(hypothesis_ngrams.values()), 1)
    recall = overlap / max(sum(reference_ngrams.values()), 1)
    return fmeasure(precision, recall)


def _lcs_fmeasure(reference: list, hypothesis: list) -> float:
    """rouge_score's ROUGE-L F-measure with the LCS length from rapidfuzz (bit-parallel, not an m*n Python table)."""
    from rapidfuzz.distance import LCSseq
    from rouge_score.scoring import fmeasure

    if not reference or not hypothesis:
        return 0.0
    reference_ids, hypothesis_ids = _interned(reference, hypothesis)
    lcs = LCSseq.similarity(reference_ids, hypothesis_ids)
    return fmeasure(lcs / len(hypothesis), lcs / len(reference))


def rouge_mean_fmeasure(reference: str, hypothesis: str) -> float:
    """Mean of the ROUGE-1, ROUGE-2 and ROUGE-L F-measures with Porter stemming.

    Equals `RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(reference, hypothesis)` averaged as
    the release does, computed from rouge_score's own tokenizer and F-measure in time linear in the text length.

    Args:
        reference: ground-truth text.
        hypothesis: predicted text.

    Returns:
        The mean F-measure in [0, 1].

    Example:
        >>> round(rouge_mean_fmeasure("a red car", "a red car"), 6)
        1.0
    """
    reference_tokens, hypothesis_tokens = _rouge_tokens(reference), _rouge_tokens(hypothesis)
    rouge1 = _ngram_fmeasure(reference_tokens, hypothesis_tokens, 1)
    rouge2 = _ngram_fmeasure(reference_tokens, hypothesis_tokens, 2)
    rouge_l = _lcs_fmeasure(reference_tokens, hypothesis_tokens)
    return (rouge1 + rouge2 + rouge_l) / 3


def _multiple_choice_letter(answer: str) -> str | None:
    """The option letter of "B", "b", "(B)", "B.", "B)", "B:", "B. text", "(B) text"; None otherwise."""
    if len(answer) >= 3 and answer[0] == "(" and answer[2] == ")" and answer[1].isascii() and answer[1].isalpha():
        rest = answer[3:]
        return answer[1].upper() if not rest or rest[0].isspace() else None
    if answer and answer[0].isascii() and answer[0].isalpha():
        rest = answer[1:]
        if not rest:
            return answer[0].upper()
        if rest[0] in ".:)" and (len(rest) == 1 or rest[1].isspace()):
            return answer[0].upper()
    return None


def _multiple_choice_accuracy(predicted: str, truth: str, lenient: bool) -> float:
    if predicted == truth:
        return 1.0
    if lenient:
        letter = _multiple_choice_letter(predicted)
        return 1.0 if letter is not None and letter == _multiple_choice_letter(truth) else 0.0
    return 0.0


def _solution_answer(solution: str) -> str:
    # Solutions of the release always carry <answer> tags. One without them is taken whole: the release would
    # compare against "" and reward every completion that has no answer.
    span = first_span(solution, ANSWER_OPEN, ANSWER_CLOSE)
    return solution.strip() if span is None else span.strip()


def _row_accuracy(text: str, solution: Any, problem_type: Any, lenient_multiple_choice: bool) -> float | None:
    """Accuracy of one completion; None for an unknown problem type or a missing solution."""
    if problem_type not in PROBLEM_TYPES or solution is None:
        return None
    predicted, truth = extract_answer(text), _solution_answer(str(solution))  # a numeric column arrives as a number
    if problem_type == "multiple choice":
        return _multiple_choice_accuracy(predicted, truth, lenient_multiple_choice)
    if problem_type == "numerical":
        return _numerical_accuracy(predicted, truth)
    if problem_type == "regression":
        return _regression_accuracy(predicted, truth)
    if problem_type == "OCR":
        return max(0.0, min(1.0, 1 - word_error_rate(truth, predicted)))
    return max(0.0, min(1.0, rouge_mean_fmeasure(truth, predicted)))  # free-form


def row_accuracies(completions: Sequence[Any], kwargs: dict, lenient_multiple_choice: bool) -> list[float | None]:
    """The accuracy of each completion from the `solution` and `problem_type` columns in `kwargs` (None: unscored)."""
    n = len(completions)
    solutions, problem_types = completion_column(kwargs, "solution", n), completion_column(kwargs, "problem_type", n)
    return [
        _row_accuracy(completion_text(c), s, t, lenient_multiple_choice)
        for c, s, t in zip(completions, solutions, problem_types, strict=True)
    ]


def _log_accuracy_metrics(log_metric: Callable[[str, float], None], problem_types: list, values: list) -> None:
    # One call per row: trl's `log_metric` averages all values logged under a name over the logging step (and
    # across processes), so the result is the mean over rows of that type, not a mean of batch means.
    for problem_type, value in zip(problem_types, values, strict=True):
        if value is not None:
            log_metric(f"{ACCURACY_METRIC_PREFIX}/{str(problem_type).replace(' ', '_')}/mean", value)
        log_metric(f"{ACCURACY_METRIC_PREFIX}/unknown_problem_type_frac", 1.0 if value is None else 0.0)


def get_accuracy_reward(lenient_multiple_choice: bool = False) -> RewardFunc:
    """Returns an `accuracy_reward`, optionally lenient about how multiple-choice letters are written.

    Args:
        lenient_multiple_choice: also accept "(B)", "B.", "b", "B) text" or "B. text" for option B (both the answer
            and the solution are read this way). Off by default: the paper's reward compares the stripped answer
            strings exactly.

    Returns:
        A reward function named `accuracy_reward` (see `accuracy_reward` for the definitions).

    Example:
        >>> lenient = get_accuracy_reward(lenient_multiple_choice=True)
        >>> lenient(["<answer>(b)</answer>"], solution=["<answer>B</answer>"], problem_type=["multiple choice"])
        [1.0]
    """

    def accuracy_reward(completions: Sequence[Any], **kwargs) -> list[float | None]:
        """Accuracy of each completion's `<answer>` against its row's `solution`, by its row's `problem_type`.

        Answer = the first `<answer>...</answer>` span, stripped (`""` when there is none); the same for the solution
        (a solution without tags is used whole).

        - multiple choice: 1.0 when the two strings are equal.
        - numerical: 0.0 when exactly one of them contains "." or ","; else commas are dropped, both are parsed as
          floats and 1.0 when they are equal after rounding to 2 decimals; unparseable -> 0.0.
        - OCR: 1 - WER (word Levenshtein / max(1, reference words)), clipped to [0, 1].
        - free-form: mean of the ROUGE-1, ROUGE-2 and ROUGE-L F-measures (Porter stemmer), clipped to [0, 1].
        - regression: 1 - min(1, (|pred - gt| + 1e-9) / (|gt| + 1e-9)); unparseable -> 0.0.

        Numbers that parse to NaN or infinity count as unparseable. Rows whose `problem_type` is not one of these
        (or that have no solution) get None, which trl leaves out. When trl passes `log_metric`, the mean accuracy
        per type is logged as `rewards/accuracy_reward/<type>/mean` (spaces in the type become "_") and the share of
        unscored rows as `rewards/accuracy_reward/unknown_problem_type_frac`.

        Args:
            completions: plain strings or conversational completions.
            **kwargs: `solution` and `problem_type` columns (one entry per completion); trl's `log_metric`.

        Returns:
            One float in [0, 1] or None per completion.

        Example:
            >>> accuracy_reward(["<answer>3.10</answer>"], solution=["<answer>3.1</answer>"], problem_type=["numerical"])
            [1.0]
        """
        values = row_accuracies(completions, kwargs, lenient_multiple_choice)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            _log_accuracy_metrics(log_metric, completion_column(kwargs, "problem_type", len(completions)), values)
        return values

    return accuracy_reward


accuracy_reward = get_accuracy_reward()
