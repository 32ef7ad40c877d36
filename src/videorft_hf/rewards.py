"""Reward callables for GRPO in trl's signature, and the `REWARD_FUNCS` registry.

Every reward is `reward(completions, **kwargs) -> list[float | None]`, one value per completion, so it works in
`VideoGRPOTrainer` and in any stock `trl.GRPOTrainer` script. Completions may be plain strings or conversational
(`[{"role": "assistant", "content": ...}]`); dataset columns (`solution`, `problem_type`, `video`, `image`, ...)
arrive as keyword arguments, one entry per completion. `None` means "cannot score this one" and trl then leaves the
row out of that reward.

The definitions are those of the VideoRFT release (the paper's section on rewards and its public code), computed exactly but without its
pitfalls: tags are found by linear scans instead of regular expressions that backtrack catastrophically on long
adversarial text, word edit distance and ROUGE-L's longest common subsequence come from `rapidfuzz` instead of
quadratic Python tables, every row uses its own `problem_type`, and no completion string can make a reward raise or
return a value outside [0, 1].

- `format_reward`: 1.0 when the whole completion is `<think>...</think>` + whitespace + `<answer>...</answer>`.
- `accuracy_reward`: per problem type (multiple choice, numerical, OCR, free-form, regression).
- `get_semantic_consistency_reward(...)`: VideoRFT's SigLIP text-frame consistency of the reasoning, gated on accuracy.

Example:
    >>> from videorft_hf.rewards import accuracy_reward, format_reward
    >>> completions = [[{"role": "assistant", "content": "<think>Two cars.</think>\\n<answer>2</answer>"}]]
    >>> format_reward(completions)
    [1.0]
    >>> accuracy_reward(completions, solution=["<answer>2</answer>"], problem_type=["numerical"])
    [1.0]
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from .prompts import PROBLEM_TYPES

__all__ = [
    "ACCURACY_METRIC_PREFIX",
    "DEFAULT_SEMANTIC_MODEL",
    "REWARD_FUNCS",
    "RewardModelError",
    "accuracy_reward",
    "completion_text",
    "extract_answer",
    "format_reward",
    "get_accuracy_reward",
    "get_reward_funcs",
    "get_semantic_consistency_reward",
    "reasoning_span",
    "rouge_mean_fmeasure",
    "word_error_rate",
]

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
DEFAULT_SEMANTIC_MODEL = "google/siglip-so400m-patch14-384"


class RewardModelError(OSError):
    """A model a reward function needs cannot be found or loaded; raised when the reward is built or its trainer
    starts, never partway through training. The message names the model and says what to pass instead."""


def _reward_model_error(model_name_or_path: str, cause: object) -> RewardModelError:
    return RewardModelError(
        f"The semantic-consistency reward model {model_name_or_path!r} cannot be loaded: {cause}. Pass a local "
        f"folder or the Hub id of a text-image encoder (--semantic_model_name_or_path; default "
        f"{DEFAULT_SEMANTIC_MODEL}); without network access, download it first (`hf download <id>`)."
    )


def resolve_reward_model(model_name_or_path: str) -> str:
    """Checks that a reward model exists, without loading it: a local folder with a `config.json`, or a Hub id
    whose `config.json` is in the local cache or on the Hub (one small download at most; offline, the cache only).

    Args:
        model_name_or_path: A local folder or a Hub model id.

    Returns:
        The path of the model's `config.json`.

    Raises:
        RewardModelError: the folder or id does not exist, has no config, or is not cached while offline.

    Example:
        >>> resolve_reward_model("/no/such/model")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        RewardModelError: The semantic-consistency reward model '/no/such/model' cannot be loaded: ...
    """
    path = os.path.expanduser(os.fspath(model_name_or_path))
    if os.path.isdir(path):
        config = os.path.join(path, "config.json")
        if not os.path.isfile(config):
            raise _reward_model_error(model_name_or_path, f"the folder {path} has no config.json")
        return config
    if path.startswith((".", "/", "~")) or path.count("/") > 1 or os.path.exists(path):  # a path, not a Hub id
        raise _reward_model_error(model_name_or_path, f"no such folder ({os.path.abspath(path)})")
    from huggingface_hub.utils import HFValidationError
    from transformers.utils import cached_file

    try:
        return cached_file(path, "config.json")
    except (OSError, HFValidationError, ValueError) as error:
        raise _reward_model_error(model_name_or_path, " ".join(str(error).split())) from error
# Per-type accuracy goes to trl's `log_metric` under `rewards/accuracy_reward/<type>/mean` (spaces become "_"), next
# to trl's own `rewards/accuracy_reward/mean`; the share of rows with an unknown problem type under
# `rewards/accuracy_reward/unknown_problem_type_frac`.
ACCURACY_METRIC_PREFIX = "rewards/accuracy_reward"

RewardFunc = Callable[..., list[float | None]]


# --------------------------------------------------------------------------------------------- text and tags
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


def _first_span(text: str, open_tag: str, close_tag: str) -> str | None:
    """Content between the first `open_tag` and the first `close_tag` after it, or None.

    Equals `re.search(open_tag + "(.*?)" + close_tag, text, re.DOTALL).group(1)` (None when there is no match) in
    linear time: if the first opening tag has no closing tag after it, no later one has. The tags used here cannot
    overlap themselves or each other.
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
    span = _first_span(text, ANSWER_OPEN, ANSWER_CLOSE)
    return "" if span is None else span.strip()


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


def reasoning_span(text: str) -> str:
    """The text the semantic-consistency reward embeds, as the release defines it.

    The content of the first `<think>...</think>` block after its first period (left-stripped), or the whole think
    content when it has no period; the whole completion when there is no think block. Truncation to the text
    encoder's limit happens at tokenization.

    Args:
        text: a completion's text.

    Returns:
        The reasoning span.

    Example:
        >>> reasoning_span("<think>Let me see. The ball is red.</think><answer>A</answer>")
        'The ball is red.'
    """
    think = _first_span(text, THINK_OPEN, THINK_CLOSE)
    if think is None:
        return text
    period = think.find(".")
    return think[period + 1 :].lstrip() if period >= 0 else think


# --------------------------------------------------------------------------------------------- format
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


# --------------------------------------------------------------------------------------------- accuracy
def _parse_number(text: str) -> float | None:
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
    truth_value, predicted_value = _parse_number(truth), _parse_number(predicted)
    if truth_value is None or predicted_value is None:
        return 0.0
    return 1.0 if round(truth_value, 2) == round(predicted_value, 2) else 0.0


def _regression_accuracy(predicted: str, truth: str) -> float:
    truth_value, predicted_value = _parse_number(truth), _parse_number(predicted)
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
    span = _first_span(solution, ANSWER_OPEN, ANSWER_CLOSE)
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


def _column(kwargs: dict, name: str, size: int) -> list:
    values = kwargs.get(name)
    if values is None:
        return [None] * size
    if isinstance(values, str) or len(values) != size:
        raise ValueError(
            f"The `{name}` column must hold one value per completion ({size}), got {values!r:.200}. "
            "trl repeats every dataset column for each generation; pass lists of the same length as `completions`."
        )
    return list(values)


def _accuracies(completions: Sequence[Any], kwargs: dict, lenient_multiple_choice: bool) -> list[float | None]:
    n = len(completions)
    solutions, problem_types = _column(kwargs, "solution", n), _column(kwargs, "problem_type", n)
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
        values = _accuracies(completions, kwargs, lenient_multiple_choice)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            _log_accuracy_metrics(log_metric, _column(kwargs, "problem_type", len(completions)), values)
        return values

    return accuracy_reward


accuracy_reward = get_accuracy_reward()


# --------------------------------------------------------------------------------------------- semantic consistency
def _frames_to_images(frames: Any, row: int) -> list:
    """Turns one entry of the `frames` keyword into a list of (H, W, 3) uint8 arrays or PIL images."""
    import numpy as np
    from PIL import Image

    if isinstance(frames, Image.Image):
        return [frames.convert("RGB")]
    if isinstance(frames, (list, tuple)):  # a list of frames
        return [image for frame in frames for image in _frames_to_images(frame, row)]
    if hasattr(frames, "detach") and hasattr(frames, "cpu"):  # torch tensor
        frames = frames.detach().cpu().numpy()
    array = np.asarray(frames)
    if array.dtype != np.uint8:
        raise TypeError(
            f"frames[{row}] has dtype {array.dtype}; pass uint8 RGB frames in [0, 255] (as `load_video_frames` "
            "returns them): float pixels are ambiguous (0-1 or 0-255) and the release's float path wrapped colours."
        )
    if array.ndim == 3 and array.shape[-1] == 3:
        return [array]
    if array.ndim == 4 and array.shape[-1] == 3 and array.shape[0] > 0:
        return list(array)
    raise ValueError(
        f"frames[{row}] has shape {tuple(array.shape)}; expected (T, H, W, 3) for a video or (H, W, 3) for an image, "
        "channels last."
    )


class _SemanticEncoder:
    """Loads the text-image encoder once, lazily, and embeds texts and frames in batches (L2-normalised, float32)."""

    def __init__(
        self,
        model_name_or_path: str,
        model: Any,
        processor: Any,
        device: Any,
        torch_dtype: Any,
        text_batch_size: int,
        frame_batch_size: int,
        max_text_tokens: int | None,
    ):
        self.model_name_or_path = model_name_or_path
        self.model = model
        self.processor = processor
        self.device = device
        self.torch_dtype = torch_dtype
        self.text_batch_size = text_batch_size
        self.frame_batch_size = frame_batch_size
        self.max_text_tokens = max_text_tokens
        self._lock = threading.Lock()
        self._ready = False

    @property
    def loaded(self) -> bool:
        return self._ready

    def load(self) -> None:
        """Loads (or places) the model and processor; a no-op after the first call."""
        with self._lock:
            if self._ready:
                return
            import torch

            dtype = self.torch_dtype
            if isinstance(dtype, str):
                dtype = getattr(torch, dtype)
            if self.model is None:
                from transformers import AutoModel

                device = self.device
                if device is None:
                    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
                try:
                    self.model = AutoModel.from_pretrained(self.model_name_or_path, dtype=dtype or torch.float32)
                except OSError as error:
                    raise _reward_model_error(self.model_name_or_path, " ".join(str(error).split())) from error
                self.model.to(device)
            elif self.device is not None or dtype is not None:
                self.model.to(device=self.device, dtype=dtype)
            if self.processor is None:
                from transformers import AutoProcessor

                self.processor = AutoProcessor.from_pretrained(self.model_name_or_path)
            self.model.eval().requires_grad_(False)
            if self.max_text_tokens is None:
                text_config = getattr(self.model.config, "text_config", self.model.config)
                self.max_text_tokens = getattr(text_config, "max_position_embeddings", None) or 64
            self._ready = True

    @staticmethod
    def _pooled(output):
        return output if hasattr(output, "norm") else output.pooler_output

    def _normalised(self, embeddings):
        import torch

        embeddings = self._pooled(embeddings).float()
        return embeddings / embeddings.norm(p=2, dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)

    def embed_texts(self, texts: list[str]):
        import torch

        self.load()
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        parameter = next(self.model.parameters())
        chunks = []
        for start in range(0, len(texts), self.text_batch_size):
            inputs = tokenizer(
                texts[start : start + self.text_batch_size],
                padding="max_length",  # SigLIP pools the last position: it was trained on texts padded to 64
                truncation=True,
                max_length=self.max_text_tokens,
                return_tensors="pt",
            )
            inputs = {k: v.to(parameter.device) for k, v in inputs.items()}
            with torch.inference_mode():
                chunks.append(self._normalised(self.model.get_text_features(**inputs)))
        return torch.cat(chunks)

    def embed_images(self, images: list):
        import torch

        self.load()
        image_processor = getattr(self.processor, "image_processor", self.processor)
        parameter = next(self.model.parameters())
        chunks = []
        for start in range(0, len(images), self.frame_batch_size):
            batch = images[start : start + self.frame_batch_size]
            # uint8 arrays and PIL images go to the processor as they are: it rescales once, nothing wraps.
            pixels = image_processor(images=batch, return_tensors="pt", input_data_format="channels_last")
            pixel_values = pixels["pixel_values"].to(device=parameter.device, dtype=parameter.dtype)
            with torch.inference_mode():
                chunks.append(self._normalised(self.model.get_image_features(pixel_values=pixel_values)))
        return torch.cat(chunks)


def get_semantic_consistency_reward(
    model_name_or_path: str = DEFAULT_SEMANTIC_MODEL,
    weight: float = 2.0,
    gate_on_accuracy: bool = True,
    *,
    model: Any = None,
    processor: Any = None,
    device: Any = None,
    torch_dtype: Any = None,
    media_root: str | os.PathLike | None = None,
    sampling_config: Any = None,
    video_backend: str = "auto",
    frame_store: Any = None,
    lenient_multiple_choice: bool = False,
    text_batch_size: int = 64,
    frame_batch_size: int = 64,
    max_text_tokens: int | None = None,
    resolve: bool = True,
) -> RewardFunc:
    """Returns VideoRFT's `semantic_consistency_reward`: how well the reasoning agrees with the frames.

    For each completion, text t = `reasoning_span(completion)` (the think content after its first period; the whole
    completion without a think block), truncated to the text encoder's limit (64 tokens for SigLIP); for each frame
    f, r_f = min(1, weight * max(cos(t, v_f), 0)); the reward is the mean of r_f over the frames (an image is one
    frame). Gated: 0.0 wherever the accuracy is 0.

    Frames: pass the keyword `frames`, a list with one entry per completion, each None or a uint8 numpy array / torch
    tensor of shape (T, H, W, 3) (a video), or a PIL image / (H, W, 3) uint8 array (an image); `VideoGRPOTrainer`
    passes the frames it decoded for the rollout, the same object for all completions of a prompt. Entries that are
    None, or a missing `frames` keyword (stock trl), make the reward decode the row's `video` (else `image`) column
    with `videorft_hf.video` and `sampling_config`. Frame embeddings are computed once per distinct video per call:
    keyed by `id(frames[i])` for passed frames and by path for decoded ones. Rows with no media get None.

    Building it checks that the model exists (`resolve_reward_model`: a local folder, or a Hub id cached or on the
    Hub), so a misspelled id fails here and not at the first correct answer of a training run. The weights load at
    `reward.encoder.load()`, which `VideoGRPOTrainer` calls before the first step, or else at the first call.
    `REWARD_FUNCS["semantic_consistency_reward"]` is built with `resolve=False`, so importing the registry touches
    nothing; the trainer resolves and loads it.

    Args:
        model_name_or_path: text-image encoder with `get_text_features` / `get_image_features` (SigLIP in the paper).
        weight: scale w applied to the cosine before clipping at 1.
        gate_on_accuracy: return 0.0 where the accuracy is 0. The accuracy is computed here with the same
            definitions as `accuracy_reward` (cheap), from the `solution` and `problem_type` columns, which must be
            present; rows with an unknown problem type get None.
        model: an already built model (e.g. a tiny one in tests); `model_name_or_path` is then not loaded.
        processor: its processor (tokenizer + image processor); loaded from `model_name_or_path` when None.
        device: where the model runs; default the current CUDA device if any, else CPU (a passed `model` stays where
            it is unless this is set).
        torch_dtype: model dtype (a `torch.dtype` or its name); default float32 for a loaded model, unchanged for a
            passed one.
        media_root: folder that relative `./` media paths are resolved in (absolute paths are used as they are).
        sampling_config: `VideoSamplingConfig` for decoding; default the "videorft-train" preset (16 frames), as the
            release's reward sampled.
        video_backend: backend for `load_video_frames`.
        frame_store: optional `videorft_hf.frame_store.FrameStore` of prepared frames, read before decoding.
        lenient_multiple_choice: gate with the lenient multiple-choice accuracy (see `get_accuracy_reward`).
        text_batch_size: texts per text-encoder pass.
        frame_batch_size: frames per image-encoder pass.
        max_text_tokens: token limit of the text; default the encoder's `max_position_embeddings` (64 for SigLIP).
        resolve: check now that `model_name_or_path` exists (ignored when `model` is given).

    Returns:
        A reward function named `semantic_consistency_reward` with one float in [0, 1] or None per completion. Its
        `encoder` attribute holds the model (`encoder.load()`, `encoder.loaded`, `encoder.model`).

    Raises:
        RewardModelError: `model_name_or_path` names no model (with `resolve`).

    Example:
        >>> reward = get_semantic_consistency_reward()  # found, not loaded yet  # doctest: +SKIP
        >>> reward(completions, frames=[frames] * len(completions), solution=solutions,
        ...        problem_type=problem_types)  # doctest: +SKIP
        [0.43, 0.0, ...]
    """
    if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
        raise ValueError(f"weight must be a finite number >= 0, got {weight!r}.")
    if resolve and model is None:
        resolve_reward_model(model_name_or_path)
    encoder = _SemanticEncoder(
        model_name_or_path, model, processor, device, torch_dtype, text_batch_size, frame_batch_size, max_text_tokens
    )

    def _resolve(path: Any) -> str:
        path = os.fspath(path)
        if media_root is not None and not os.path.isabs(path):
            from .data import resolve_media_path

            return resolve_media_path(path, media_root)
        return os.path.abspath(path)

    def _decode(source: str, path: str) -> list:
        from . import video as video_module

        config = sampling_config or video_module.VideoSamplingConfig.from_preset("videorft-train")
        if source == "video":
            frames, _ = video_module.load_video_frames(path, config, backend=video_backend, store=frame_store)
            return list(frames)
        return [video_module.load_image(path, config)]

    def semantic_consistency_reward(completions: Sequence[Any], **kwargs) -> list[float | None]:
        import torch

        n = len(completions)
        passed_frames = _column(kwargs, "frames", n)
        videos, images = _column(kwargs, "video", n), _column(kwargs, "image", n)
        if gate_on_accuracy:
            if kwargs.get("solution") is None or kwargs.get("problem_type") is None:
                raise ValueError(
                    "semantic_consistency_reward is gated on accuracy and needs the `solution` and `problem_type` "
                    "columns; add them to the dataset or build the reward with gate_on_accuracy=False."
                )
            accuracies = _accuracies(completions, kwargs, lenient_multiple_choice)
        rewards: list[float | None] = [None] * n
        media_keys: dict[int, Hashable] = {}
        media_sources: dict[Hashable, tuple[str, Any, int]] = {}
        for i in range(n):
            if passed_frames[i] is not None:
                key, source = ("frames", id(passed_frames[i])), ("frames", passed_frames[i])
            elif videos[i] is not None:
                path = _resolve(videos[i])
                key, source = ("video", path), ("video", path)
            elif images[i] is not None:
                path = _resolve(images[i])
                key, source = ("image", path), ("image", path)
            else:
                continue  # no media: None
            if gate_on_accuracy:
                if accuracies[i] is None:
                    continue
                if accuracies[i] <= 0.0:  # as released: `accuracy <= 0` zeroes the semantic reward
                    rewards[i] = 0.0
                    continue
            media_keys[i] = key
            media_sources.setdefault(key, (*source, i))
        if not media_keys:
            return rewards

        texts = [reasoning_span(completion_text(completions[i])) for i in media_keys]
        unique_texts = list(dict.fromkeys(texts))
        text_embeddings = encoder.embed_texts(unique_texts)
        text_row = {text: j for j, text in enumerate(unique_texts)}
        frame_embeddings = {}
        for key, (source, value, row) in media_sources.items():
            images_of_row = _frames_to_images(value, row) if source == "frames" else _decode(source, value)
            frame_embeddings[key] = encoder.embed_images(images_of_row)
        for (i, key), text in zip(media_keys.items(), texts, strict=True):
            cosines = frame_embeddings[key] @ text_embeddings[text_row[text]]
            per_frame = torch.clamp(weight * cosines.clamp_min(0.0), max=1.0)
            rewards[i] = float(per_frame.mean())
        return rewards

    semantic_consistency_reward.encoder = encoder
    return semantic_consistency_reward


# --------------------------------------------------------------------------------------------- registry
REWARD_FUNCS: dict[str, RewardFunc] = {
    "format_reward": format_reward,
    "accuracy_reward": accuracy_reward,
    # Built without resolving its model, so that importing this touches nothing; VideoGRPOTrainer loads it.
    "semantic_consistency_reward": get_semantic_consistency_reward(resolve=False),
}


def get_reward_funcs(names: str | Sequence[str]) -> list[RewardFunc]:
    """Resolves reward names the way trl's `grpo.py` script does: a `REWARD_FUNCS` key or a dotted import path.

    Args:
        names: one name or a list of names, e.g. `["format_reward", "accuracy_reward", "my_pkg.rewards.my_reward"]`.
            Dotted paths are imported with the current directory on `sys.path`, as in trl.

    Returns:
        The reward callables, in order.

    Raises:
        ValueError: a name is neither a registry key nor an importable `module.attribute` path.

    Example:
        >>> [f.__name__ for f in get_reward_funcs(["format_reward", "accuracy_reward"])]
        ['format_reward', 'accuracy_reward']
    """
    if isinstance(names, str):
        names = [names]
    funcs = []
    for name in names:
        if name in REWARD_FUNCS:
            funcs.append(REWARD_FUNCS[name])
            continue
        module_path, _, attribute = name.rpartition(".")
        func = None
        if module_path:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            try:
                func = getattr(importlib.import_module(module_path), attribute, None)
            except ImportError:
                func = None
        if not callable(func):
            raise ValueError(
                f"Could not load reward function {name!r}. Expected one of {list(REWARD_FUNCS)} or an importable "
                "dotted path such as 'my_pkg.rewards.my_reward'."
            )
        funcs.append(func)
    return funcs
