"""Group-level reward shaping: VideoRFT's length bonus and Video-R1's T-GRPO temporal bonus.

Both depend on a whole group (the `num_generations` completions of one prompt), so they are computed after the
rewards of every process are gathered, as plain functions over per-completion tensors and each completion's group id
(`groups`, fixed where the trainer builds the generation batch; the rows of a group need not be adjacent, and two
groups stay apart even when their prompts are the same).
`VideoGRPOTrainer._shape_rewards` calls them and adds each bonus to the accuracy reward (as the release does), so that
trl sums it into the reward with the accuracy reward's weight; the trainer logs each bonus as `shaping/<field>`.
The settings are the fields of `videorft_hf.configs.RewardShapingArguments`.

Example:
    >>> import torch
    >>> correct = correct_completions(torch.tensor([1.0, 1.0, 0.0, 1.0]), threshold=0.1)
    >>> groups = torch.tensor([0, 0, 1, 1])
    >>> group_length_bonus(correct, torch.tensor([3, 6, 2, 2]), groups, min_tokens=2, max_tokens=4, value=0.5).tolist()
    [0.5, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _per_group(values: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of `values` (`(N,)` or `(N, k)`) over each group (groups in increasing id order), and each row's group
    position in that order."""
    import torch

    if groups.shape[0] != values.shape[0]:
        raise ValueError(f"{groups.shape[0]} group ids for {values.shape[0]} completions: pass one per completion.")
    ids, position = torch.unique(groups.to(values.device), return_inverse=True)
    sums = torch.zeros((len(ids), *values.shape[1:]), dtype=values.dtype, device=values.device)
    return sums.index_add_(0, position, values), position


def correct_completions(accuracy: torch.Tensor, threshold: float) -> torch.Tensor:
    """Which completions count as correct for shaping: accuracy above `threshold` (an unscored NaN never is).

    Args:
        accuracy: `(N,)` accuracy reward of each completion, NaN where it could not be scored.
        threshold: the accuracy a correct completion exceeds.

    Returns:
        `(N,)` bool tensor.
    """
    return accuracy > threshold


def group_length_bonus(
    correct: torch.Tensor, lengths: torch.Tensor, groups: torch.Tensor, min_tokens: int, max_tokens: int, value: float
) -> torch.Tensor:
    """VideoRFT's length control: when more than one completion of a group is correct, each correct one whose length
    lies in [`min_tokens`, `max_tokens`] earns `value`.

    Args:
        correct: `(N,)` bool, from `correct_completions`.
        lengths: `(N,)` completion lengths in tokens.
        groups: `(N,)` group id of each completion.
        min_tokens: shortest completion that earns the bonus.
        max_tokens: longest completion that earns the bonus.
        value: the bonus.

    Returns:
        `(N,)` float bonus per completion.

    Example:
        >>> import torch
        >>> correct = torch.tensor([True, True, False, True])
        >>> groups = torch.tensor([0, 0, 1, 1])
        >>> group_length_bonus(correct, torch.tensor([3, 6, 2, 2]), groups, 2, 4, 1.0).tolist()  # group 1: one correct
        [1.0, 0.0, 0.0, 0.0]
    """
    counts, position = _per_group(correct.long(), groups)
    several_correct = (counts > 1)[position]
    in_range = (lengths >= min_tokens) & (lengths <= max_tokens)
    return (correct & several_correct & in_range).float() * value


def group_temporal_bonus(
    correct: torch.Tensor, shuffled_counts: torch.Tensor, groups: torch.Tensor, ratio: float, value: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Video-R1's T-GRPO: a group whose accuracy rate p on ordered frames reaches `ratio` times its rate p~ on
    frame-shuffled frames gives `value` to each of its correct completions; groups with no shuffled rollout give
    nothing.

    Args:
        correct: `(N,)` bool, from `correct_completions`.
        shuffled_counts: `(N, 2)` shuffled rollouts `(correct, rolled out)` credited to each completion's row (see
            `shuffled_correct_counts`); they are summed over each group.
        groups: `(N,)` group id of each completion.
        ratio: p must reach `ratio * p~`.
        value: the bonus.

    Returns:
        `(N,)` float bonus per completion, and p~ per group, in increasing group id order (NaN where nothing was
        rolled out).

    Example:
        >>> import torch
        >>> correct = torch.tensor([True, False, True, True])
        >>> counts = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 2.0], [0.0, 0.0]])
        >>> groups = torch.tensor([0, 0, 1, 1])
        >>> bonus, shuffled_accuracy = group_temporal_bonus(correct, counts, groups, ratio=0.8, value=1.0)
        >>> bonus.tolist(), shuffled_accuracy.tolist()  # p = 0.5 < 0.8 * 1.0; p = 1.0 >= 0.8 * 0.5
        ([0.0, 0.0, 1.0, 1.0], [1.0, 0.5])
    """
    import torch

    shuffled, position = _per_group(shuffled_counts.float(), groups)
    ordered, _ = _per_group(torch.stack([correct.float(), torch.ones_like(correct, dtype=torch.float)], dim=1), groups)
    rolled_out = shuffled[:, 1] > 0
    shuffled_rate = shuffled[:, 0] / shuffled[:, 1].clamp(min=1)
    ordered_rate = ordered[:, 0] / ordered[:, 1]
    earns = rolled_out & (ordered_rate >= ratio * shuffled_rate)
    bonus = (correct & earns[position]).float() * value
    return bonus, torch.where(rolled_out, shuffled_rate, torch.nan)


def shuffled_correct_counts(
    scores: Sequence[float | None], owners: Sequence[int], num_rows: int, threshold: float, device=None
) -> torch.Tensor:
    """Counts T-GRPO's shuffled rollouts per row: `(correct, rolled out)`, each rollout credited to its owner row.

    Crediting every rollout of a group to one of its rows here (its first) makes the sums over each group right
    after the rows of all processes are gathered.

    Args:
        scores: the accuracy reward of each shuffled rollout (None: unscored, never correct).
        owners: the row each rollout is credited to.
        num_rows: rows of the local batch.
        threshold: the accuracy a correct rollout exceeds.
        device: where the counts live.

    Returns:
        `(num_rows, 2)` float tensor.

    Example:
        >>> shuffled_correct_counts([1.0, 0.0, None], [0, 0, 2], 3, threshold=0.1).tolist()
        [[1.0, 2.0], [0.0, 0.0], [0.0, 1.0]]
    """
    import torch

    counts = torch.zeros(num_rows, 2, device=device)
    for owner, score in zip(owners, scores, strict=True):
        counts[owner, 0] += float(score is not None and score > threshold)
        counts[owner, 1] += 1
    return counts
