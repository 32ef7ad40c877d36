"""Reward callables for GRPO in trl's signature, the group-level shaping, and the registry scripts build them from.

Every reward is `reward(completions, **kwargs) -> list[float | None]`, one value per completion, so it works in
`VideoGRPOTrainer` and in any stock `trl.GRPOTrainer` script. Completions may be plain strings or conversational
(`[{"role": "assistant", "content": ...}]`); dataset columns (`solution`, `problem_type`, `video`, `image`, ...)
arrive as keyword arguments, one entry per completion. `None` means "cannot score this one" and trl then leaves the
row out of that reward.

The definitions are those of the VideoRFT release (the paper's section on rewards and its public code), computed
exactly but without its pitfalls: tags are found by linear scans instead of regular expressions that backtrack
catastrophically on long adversarial text, word edit distance and ROUGE-L's longest common subsequence come from
`rapidfuzz` instead of quadratic Python tables, every row uses its own `problem_type`, and no completion string can
make a reward raise or return a value outside [0, 1].

- `format.py`: `format_reward`, 1.0 when the whole completion is `<think>...</think>` + whitespace +
  `<answer>...</answer>`.
- `accuracy.py`: `accuracy_reward` per problem type (multiple choice, numerical, OCR, free-form, regression), with
  its text metrics.
- `semantic.py`: `get_semantic_consistency_reward(...)`, VideoRFT's SigLIP text-frame consistency of the reasoning,
  gated on accuracy.
- `shaping.py`: the group-level length bonus and T-GRPO bonus that `VideoGRPOTrainer` adds after the gather.
- `registry.py`: `get_reward_funcs(script_args)`, the rewards a script names, built when it asks.
- `completions.py`: what every reward reads (a completion's text, its tags, the dataset columns).

Heavy libraries (torch, transformers, rapidfuzz, rouge_score) are imported when a reward first needs them, and no
reward is built at import.

Example:
    >>> from videorft_hf.rewards import accuracy_reward, format_reward
    >>> completions = [[{"role": "assistant", "content": "<think>Two cars.</think>\\n<answer>2</answer>"}]]
    >>> format_reward(completions)
    [1.0]
    >>> accuracy_reward(completions, solution=["<answer>2</answer>"], problem_type=["numerical"])
    [1.0]
"""

from .accuracy import (
    ACCURACY_METRIC_PREFIX,
    accuracy_reward,
    get_accuracy_reward,
    rouge_mean_fmeasure,
    word_error_rate,
)
from .completions import RewardFunc, completion_text, extract_answer
from .format import format_reward
from .registry import DEFAULT_REWARD_FUNCS, REWARD_FUNCS, get_reward_funcs
from .semantic import (
    DEFAULT_SEMANTIC_MODEL,
    RewardModelError,
    get_semantic_consistency_reward,
    reasoning_span,
    resolve_reward_model,
)

__all__ = [
    "ACCURACY_METRIC_PREFIX",
    "DEFAULT_REWARD_FUNCS",
    "DEFAULT_SEMANTIC_MODEL",
    "REWARD_FUNCS",
    "RewardFunc",
    "RewardModelError",
    "accuracy_reward",
    "completion_text",
    "extract_answer",
    "format_reward",
    "get_accuracy_reward",
    "get_reward_funcs",
    "get_semantic_consistency_reward",
    "reasoning_span",
    "resolve_reward_model",
    "rouge_mean_fmeasure",
    "word_error_rate",
]
