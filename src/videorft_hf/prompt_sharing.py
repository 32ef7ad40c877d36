"""Per-token log-probs of GRPO completions with each prompt, and its video, computed once per group.

The G completions of a GRPO prompt share its tokens and its media. Scoring them the way trl does (one row per
completion, `prompt + completion`) runs the vision tower G times per video and the language model over G copies of
the prompt. `shared_prompt_logps` packs each group into one sequence instead:

    prompt[:-1] | prompt[-1] completion_1 | prompt[-1] completion_2 | ... | prompt[-1] completion_n

with a block attention mask: the prompt is causal as usual, each completion block attends to the prompt and,
causally, to itself, never to the other completions. Each block starts with its own copy of the prompt's last token,
whose hidden state predicts the completion's first token, so the model's next-token head scores exactly the
completion tokens. Every token keeps the position it has in its unshared row, so the result equals the per-row
computation up to float rounding, with gradients flowing into the shared prompt once per group. The vision tower sees
each group's media once.

M-RoPE positions, in both paths, come from Qwen's rule (`videorft_hf.positions.rope_index`), passed to the model as
`position_ids`, never from the installed transformers' `get_rope_index` (which misplaces the text after a video in
transformers 5.3-5.25).

`generate_with_shared_prefill` does the same for generation: each unique prompt is prefilled once (at the rule's
positions), its KV cache expanded over its group, and `generate` continues every row from it with the rule's decoding
deltas.

The model is called exactly as trl 1.16's `GRPOTrainer._get_per_token_logps_and_entropies` calls it: with `labels`
and `fused_lm_head=True`, so temperature, the fp32 LM head option and the entropy come from the fused head that
`GRPOTrainer` adds to its models (`trl.trainer.utils.add_fused_lm_head`). Where sharing cannot apply (no row has
media, no group has two rows, an attention implementation without custom masks) the plain per-row computation runs,
and `SharingStats.shared` says so.

Example:
    ```python
    from trl.trainer.utils import add_fused_lm_head
    from videorft_hf.prompt_sharing import shared_prompt_logps

    add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))
    # input_ids = left-padded prompts + right-padded completions (trl's layout); vision_rows[i]: row i's processor
    # outputs (`pixel_values_videos`, `video_grid_thw`, ...) or None
    # groups[i]: row i's group (the rows of one prompt with its media)
    result = shared_prompt_logps(model, input_ids, attention_mask, logits_to_keep, vision_rows, groups=groups,
                                 compute_entropy=True)
    result.logps, result.entropies, result.stats.lm_tokens
    ```
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .internals import (
    apply_position_rule,
    attention_implementation,
    deltas_from_padded_length,
    expanded_cache_argument,
    has_fused_lm_head,
    set_decode_deltas,
)
from .positions import POSITION_RULE_MODEL_TYPES, PositionRule, rope_index
from .processing import collate_vision, mm_token_type_ids

__all__ = [
    "SHARED_ATTENTION_IMPLEMENTATIONS",
    "PackedChunk",
    "SharedLogProbs",
    "SharingStats",
    "generate_with_shared_prefill",
    "generation_groups",
    "keep_groups_together",
    "plan_chunks",
    "shared_prompt_logps",
]

logger = logging.getLogger(__name__)

# Attention implementations that take a custom 4D mask as it is: sdpa a boolean one, eager an additive one.
SHARED_ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")
_PIXEL_KEYS = ("pixel_values", "pixel_values_videos")
_GRID_KEYS = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")


@dataclass
class SharingStats:
    """What one call computed, against the per-row computation of the same rows.

    Attributes:
        rows: rows scored.
        groups: unique prompts (with their media) among them.
        shared: whether the prompt-shared path ran (False: the per-row path, see `reason`).
        reason: why the per-row path ran ("" when shared).
        lm_tokens: token positions through the language model (packing padding included).
        unshared_lm_tokens: token positions the per-row computation runs (rows x padded length).
        vision_patches: patch rows through the vision tower (`pixel_values` plus `pixel_values_videos`).
        unshared_vision_patches: patch rows the per-row computation runs.
    """

    rows: int = 0
    groups: int = 0
    shared: bool = False
    reason: str = ""
    lm_tokens: int = 0
    unshared_lm_tokens: int = 0
    vision_patches: int = 0
    unshared_vision_patches: int = 0


@dataclass
class SharedLogProbs:
    """Per-token log-probs `(rows, logits_to_keep)`, entropies (or None) and the call's `SharingStats`.

    Positions past a completion's mask are 0 in both tensors, as in trl.
    """

    logps: torch.Tensor
    entropies: torch.Tensor | None
    stats: SharingStats


@dataclass
class PackedChunk:
    """One forward pass of the shared path: `segments` as `(group, rows)` pairs, one packed sequence each."""

    segments: list[tuple[int, list[int]]]

    @property
    def rows(self) -> list[int]:
        return [row for _, rows in self.segments for row in rows]


# ---------------------------------------------------------------------------------------------- pure planning
def _same_vision(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    if a is b:
        return True
    if a is None or b is None or set(a) != set(b):
        return False
    return all(torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])) for key in a)


def generation_groups(rows: int, group_size: int, process_index: int = 0) -> list[int]:
    """The group of each row of a process's generation batch, as trl's sampler lays the batch out.

    trl's `RepeatSampler` repeats each prompt `group_size` times (`num_generations`, or `num_generations_eval` when
    evaluating) one after another, and accelerate hands each process a consecutive slice of `rows` of that global
    order, so that trl's rewards, gathered in process order, hold each group in one block. The ids are global (the
    same group has the same id on every process), so that shaping after the gather and a group split between
    processes agree. They are fixed here, where the batch is built, and travel with it (the trainer's batch field
    `group_ids`); nothing infers them again.

    Args:
        rows: rows of the generation batch on this process.
        group_size: completions per prompt.
        process_index: this process's index.

    Returns:
        One global group id per local row.

    Example:
        >>> generation_groups(4, 8, process_index=1)  # rows 4-7 of the first prompt's 8 copies
        [0, 0, 0, 0]
        >>> generation_groups(4, 2, process_index=1)
        [4, 4, 5, 5]
    """
    if group_size < 1 or rows < 0 or process_index < 0:
        raise ValueError(f"Invalid layout: {rows} rows, groups of {group_size}, process {process_index}.")
    first = process_index * rows
    return [(first + row) // group_size for row in range(rows)]


def _checked_groups(groups, prompt_ids, prompt_mask, vision_rows) -> list[int]:
    """`groups` as a list after checking that each group's rows hold one prompt (its tokens, and its media: the same
    tensors, as a trainer hands every row of a group, or equal ones)."""
    groups = [int(g) for g in groups]
    if len(groups) != prompt_ids.size(0):
        raise ValueError(
            f"{len(groups)} group indices for a batch of {prompt_ids.size(0)} sequences: pass one entry per row."
        )
    first: dict[int, int] = {}
    for row, group in enumerate(groups):
        head = first.setdefault(group, row)
        same_tokens = torch.equal(prompt_ids[head][prompt_mask[head].bool()], prompt_ids[row][prompt_mask[row].bool()])
        if not (same_tokens and _same_vision(vision_rows[head], vision_rows[row])):
            raise ValueError(
                f"Rows {head} and {row} are both in group {group} but their prompts or media differ: a group holds "
                "the rows of one prompt."
            )
    return groups


def keep_groups_together(permutation: Sequence[int], groups: Sequence[int]) -> list[int]:
    """Reorders a random permutation of rows so that each group's rows are adjacent.

    Groups come in the order in which the permutation first reaches one of their rows, and a group's rows in the
    order the permutation gives them. Drawn from one `torch.randperm`, as trl's row shuffle draws it, the order is as
    random at the level of groups and consumes the random generator identically; contiguous micro-batches cut from
    it then hold whole groups wherever the sizes allow, so a micro-batch computes each prompt once.

    Args:
        permutation: a permutation of `range(len(groups))`.
        groups: group id per row.

    Returns:
        The reordered permutation.

    Example:
        >>> keep_groups_together([3, 0, 2, 1], [0, 0, 1, 1])
        [3, 2, 0, 1]
    """
    rank: dict[int, int] = {}
    for row in permutation:
        rank.setdefault(groups[row], len(rank))
    return sorted(permutation, key=lambda row: rank[groups[row]])  # stable: within a group, the permutation's order


def plan_chunks(groups: Sequence[int], max_rows: int) -> list[PackedChunk]:
    """Forward passes for the shared path: rows ordered by group, at most `max_rows` rows per pass.

    A group stays in one pass when it fits; one that does not is split, and each part computes the prompt once.

    Args:
        groups: group id per row.
        max_rows: most rows per forward pass (trl's `batch_size`).

    Returns:
        The passes, each a list of `(group, rows)` segments.

    Example:
        >>> [c.segments for c in plan_chunks([0, 1, 0, 1, 2], max_rows=3)]
        [[(0, [0, 2]), (1, [1])], [(1, [3]), (2, [4])]]
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}.")
    members: dict[int, list[int]] = {}
    for row, group in enumerate(groups):
        members.setdefault(group, []).append(row)
    chunks: list[PackedChunk] = []
    current: list[tuple[int, list[int]]] = []
    room = max_rows
    for group, rows in members.items():
        while rows:
            take, rows = rows[:room], rows[room:]
            current.append((group, take))
            room -= len(take)
            if room == 0:
                chunks.append(PackedChunk(current))
                current, room = [], max_rows
    if current:
        chunks.append(PackedChunk(current))
    return chunks


# ---------------------------------------------------------------------------------------------- model access
def _unwrap(model) -> torch.nn.Module:
    """The transformers model inside distributed and peft wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def _has_sliding_layers(model) -> bool:
    return "sliding_attention" in (getattr(model.config.get_text_config(), "layer_types", None) or ())


def _why_not_shared(base, vision_rows, groups, prompt_ids, prompt_mask, token_ids, custom_mask: bool = True) -> str:
    if not any(row for row in vision_rows):
        return "no row has media"
    if len(set(groups)) == len(groups):
        return "no prompt has two rows"
    implementation = attention_implementation(base.config)
    if custom_mask and implementation not in SHARED_ATTENTION_IMPLEMENTATIONS:
        return f"attention implementation {implementation!r} takes no custom mask"
    if custom_mask and _has_sliding_layers(base):
        return "sliding-window layers"
    if getattr(base.config, "model_type", None) not in POSITION_RULE_MODEL_TYPES:
        return f"{type(base).__name__} has no M-RoPE position rule"
    last = prompt_ids[:, -1] if bool(prompt_mask[:, -1].all()) else None
    if last is None or any(t is not None and bool((last == t).any()) for t in token_ids):
        return "a prompt does not end in a text token"
    return ""


def _pixel_rows(rows: Sequence[Mapping[str, Any] | None]) -> int:
    return sum(int(row[key].shape[0]) for row in rows if row for key in _PIXEL_KEYS if key in row)


def _check_fused_head(base) -> None:
    if not has_fused_lm_head(base):
        raise TypeError(
            f"{type(base).__name__} needs trl's fused LM head: call "
            "trl.trainer.utils.add_fused_lm_head(model, temperature=..., outputs=('log_probs', 'entropy')) "
            "first (GRPOTrainer does it for its models; on a peft model, patch model.get_base_model())."
        )


def _call(model, inputs: dict, labels: torch.Tensor, compute_entropy: bool):
    outputs = model(**inputs, labels=labels, fused_lm_head=True)
    if compute_entropy and outputs.entropy is None:
        raise ValueError(
            "compute_entropy=True, but the model's fused LM head computes no entropy: add it with "
            "outputs=('log_probs', 'entropy')."
        )
    return outputs


def _vision_inputs(rows, device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in collate_vision(rows).items()}


# ---------------------------------------------------------------------------------------------- per-row path
def _per_row_logps(model, input_ids, attention_mask, logits_to_keep, vision_rows, batch_size, compute_entropy,
                   token_ids):
    """trl's computation: each row is `prompt + completion`, with its own media (at the positions of Qwen's rule)."""
    base = _unwrap(model)
    logps, entropies = [], []
    for start in range(0, input_ids.size(0), batch_size):
        end = min(start + batch_size, input_ids.size(0))
        ids, mask = input_ids[start:end], attention_mask[start:end]
        inputs = {"input_ids": ids, "attention_mask": mask}
        vision = _vision_inputs(vision_rows[start:end], ids.device)
        if vision:
            inputs.update(vision, mm_token_type_ids=mm_token_type_ids(ids, *token_ids))
            if _rule_covers(base):
                inputs["position_ids"] = _positions(base, ids, mask, vision_rows[start:end], token_ids)
        labels = ids.masked_fill(mask == 0, -100)
        labels[:, :-logits_to_keep] = -100
        outputs = _call(model, inputs, labels, compute_entropy)
        logps.append(outputs.log_probs[:, -logits_to_keep:])
        if compute_entropy:
            entropies.append(outputs.entropy[:, -logits_to_keep:])
    return torch.cat(logps), (torch.cat(entropies) if compute_entropy else None)


# ---------------------------------------------------------------------------------------------- shared path
def _rule_covers(base) -> bool:
    return getattr(base.config, "model_type", None) in POSITION_RULE_MODEL_TYPES


def _rule_index(base, input_ids, attention_mask, vision_rows, token_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE positions `(3, rows, width)` of the unshared rows and their decoding deltas, by Qwen's rule."""
    grids = {
        key: torch.cat([row[key] for row in vision_rows if row and key in row])
        for key in _GRID_KEYS
        if any(row and key in row for row in vision_rows)
    }
    return rope_index(
        PositionRule.from_config(base.config),
        input_ids,
        attention_mask,
        mm_token_type_ids=mm_token_type_ids(input_ids, *token_ids),
        deltas_from_padded_length=deltas_from_padded_length(),
        **grids,
    )


def _positions(base, input_ids, attention_mask, vision_rows, token_ids) -> torch.Tensor:
    """M-RoPE positions `(3, rows, width)` of the unshared rows, by Qwen's rule."""
    return _rule_index(base, input_ids, attention_mask, vision_rows, token_ids)[0]


def _pack(chunk: PackedChunk, prompt_ids, prompt_mask, completion_ids, completion_mask, positions, lengths):
    """Token ids, positions, labels, segment ids and key mask of one chunk's packed sequences (right-padded)."""
    width = prompt_ids.size(1)
    sequences = []
    for _, rows in chunk.segments:
        first = rows[0]
        real = prompt_mask[first].bool()
        ids = [prompt_ids[first][real][:-1]]
        pos = [positions[:, first, :width][:, real][:, :-1]]
        labels = [torch.full_like(ids[0], -100)]
        segment = [torch.zeros_like(ids[0])]
        keys = [torch.ones_like(ids[0])]
        targets = []  # (row, number of scored tokens, offset of the block's first token)
        offset = ids[0].numel()
        for block, row in enumerate(rows, start=1):
            n = lengths[row]
            block_ids = torch.cat([prompt_ids[row, -1:], completion_ids[row, :n]])
            ids.append(block_ids)
            pos.append(torch.cat([positions[:, row, width - 1 : width], positions[:, row, width : width + n]], dim=1))
            block_mask = torch.cat([prompt_mask[row, -1:], completion_mask[row, :n]])
            block_labels = block_ids.masked_fill(block_mask == 0, -100)
            block_labels[0] = -100  # the prompt's last token: its copy only predicts the completion's first token
            labels.append(block_labels)
            segment.append(torch.full_like(block_ids, block))
            keys.append(block_mask.long())
            targets.append((row, n, offset))
            offset += n + 1
        sequences.append((torch.cat(ids), torch.cat(pos, dim=1), torch.cat(labels), torch.cat(segment),
                          torch.cat(keys), targets))
    return sequences


# Padding of the packed tensors, in `_pack`'s order: ids, positions, labels, segments (-1: no segment), key mask.
_PAD = (0, 0, -100, -1, 0)


def _pad_stack(tensors: list[torch.Tensor], value: int) -> torch.Tensor:
    """Right-pads along the last dimension and stacks on a new batch dimension (dim 1 for `(3, L)` positions)."""
    longest = max(t.size(-1) for t in tensors)
    padded = [torch.nn.functional.pad(t, (0, longest - t.size(-1)), value=value) for t in tensors]
    return torch.stack(padded, dim=1 if tensors[0].dim() == 2 else 0)


def _block_mask(segments: torch.Tensor, keys: torch.Tensor, dtype: torch.dtype, implementation: str) -> torch.Tensor:
    """`(batch, 1, L, L)` mask: causal, a completion block sees the prompt (segment 0) and itself; padding is -1."""
    length = segments.size(1)
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    query, key = segments[:, :, None], segments[:, None, :]
    allowed = causal & ((key == 0) | (key == query)) & (key >= 0) & (keys[:, None, :] > 0)
    allowed |= torch.eye(length, dtype=torch.bool, device=segments.device)  # no empty row (padding, masked tokens)
    allowed = allowed[:, None]
    if implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _shared_logps(model, base, input_ids, attention_mask, keep, vision_rows, groups, batch_size, compute_entropy,
                  token_ids, stats):
    """The shared path: one packed sequence per group and pass; the counts go into `stats`."""
    rows, width = input_ids.shape[0], input_ids.shape[1] - keep
    prompt_ids, prompt_mask = input_ids[:, :width], attention_mask[:, :width]
    completion_ids, completion_mask = input_ids[:, width:], attention_mask[:, width:]
    positions = _positions(base, input_ids, attention_mask, vision_rows, token_ids)
    # Scored completion tokens per row: up to its last real token (trailing padding is never looked at).
    real = completion_mask.bool()
    lengths = torch.where(real.any(1), keep - real.flip(1).int().argmax(1), 0).tolist()
    implementation = attention_implementation(base.config)
    device = input_ids.device
    logps = entropies = None
    for chunk in plan_chunks(groups, batch_size):
        sequences = _pack(chunk, prompt_ids, prompt_mask, completion_ids, completion_mask, positions, lengths)
        ids, pos, labels, segments, keys = (_pad_stack([s[k] for s in sequences], v) for k, v in enumerate(_PAD))
        representatives = [vision_rows[seg_rows[0]] for _, seg_rows in chunk.segments]
        inputs = {
            "input_ids": ids,
            "attention_mask": _block_mask(segments, keys, base.dtype, implementation),
            "position_ids": pos,
            **_vision_inputs(representatives, device),
        }
        if any(representatives):
            inputs["mm_token_type_ids"] = mm_token_type_ids(ids, *token_ids)
        outputs = _call(model, inputs, labels, compute_entropy)
        stats.lm_tokens += ids.numel()
        stats.vision_patches += _pixel_rows(representatives)
        if logps is None:  # `+ empty sum`: connected to the graph even if no token is scored, as trl's output is
            logps = outputs.log_probs.new_zeros(rows, keep) + outputs.log_probs[:, :0].sum()
            if compute_entropy:
                entropies = outputs.entropy.new_zeros(rows, keep) + outputs.entropy[:, :0].sum()
        # log_probs[:, t] scores labels[:, t + 1]: completion token j of a block starting at `offset` is scored at
        # offset + j (the block's first token is the prompt's last).
        row_index, column, sequence_index, time_index = [], [], [], []
        for sequence, (*_, targets) in enumerate(sequences):
            for row, n, offset in targets:
                row_index += [row] * n
                column += range(n)
                sequence_index += [sequence] * n
                time_index += range(offset, offset + n)
        where = tuple(torch.tensor(i, device=device, dtype=torch.long) for i in (row_index, column))
        at = tuple(torch.tensor(i, device=device, dtype=torch.long) for i in (sequence_index, time_index))
        logps = logps.index_put(where, outputs.log_probs[at])
        if compute_entropy:
            entropies = entropies.index_put(where, outputs.entropy[at])
    return logps, entropies


def shared_prompt_logps(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    vision_rows: Sequence[Mapping[str, Any] | None],
    *,
    groups: Sequence[int],
    batch_size: int | None = None,
    compute_entropy: bool = False,
    share: bool = True,
) -> SharedLogProbs:
    """Per-token log-probs (and entropies) of the completion tokens, each prompt and its media computed once.

    The inputs are trl's: `input_ids` are left-padded prompts followed by right-padded completions of width
    `logits_to_keep`, `attention_mask` is 1 at real tokens. The result equals trl's per-row computation (within float
    rounding: 1e-5 in fp32), for log-probs, entropies and the gradients of any loss over them.

    Args:
        model: a Qwen2-VL, Qwen2.5-VL or Qwen3-VL model carrying trl's fused LM head (`add_fused_lm_head`), possibly
            wrapped by peft, DDP or DeepSpeed; called as trl calls it, so run this under the trainer's autocast.
        input_ids: `(rows, prompt_width + logits_to_keep)`.
        attention_mask: same shape, 1 at real tokens.
        logits_to_keep: completion width.
        vision_rows: per row, its processor outputs (`pixel_values`, `image_grid_thw`, `pixel_values_videos`,
            `video_grid_thw`, `second_per_grid_ts`; any subset) or None for a text row.
        groups: group id per row (the rows of one prompt with its media; `generation_groups` in the trainer). Rows of
            a group need not be adjacent; rows of different groups are never shared, even with equal prompts.
        batch_size: most rows per forward pass (default: all); rows are ordered by group before chunking.
        compute_entropy: also return the entropies (the fused head must compute them).
        share: False runs the per-row computation (the reference; `SharingStats.reason` says "share=False").

    Returns:
        `SharedLogProbs`: `logps` and `entropies` `(rows, logits_to_keep)` in the rows' order, and the stats.

    Raises:
        TypeError: the model has no fused LM head.
        ValueError: `vision_rows` or `groups` do not have one entry per row, or a group's rows differ.
    """
    rows, width = input_ids.shape
    batch_size = batch_size or rows
    base = _unwrap(model)
    config = base.config
    token_ids = (getattr(config, "image_token_id", None), getattr(config, "video_token_id", None))
    prompt_ids, prompt_mask = input_ids[:, :-logits_to_keep], attention_mask[:, :-logits_to_keep]
    _check_fused_head(base)
    if len(vision_rows) != rows:
        raise ValueError(f"{len(vision_rows)} vision rows for a batch of {rows} sequences: pass one entry per row.")
    groups = _checked_groups(groups, prompt_ids, prompt_mask, vision_rows)
    stats = SharingStats(
        rows=rows,
        groups=len(set(groups)),
        unshared_lm_tokens=rows * width,
        unshared_vision_patches=_pixel_rows(vision_rows),
    )
    stats.reason = "share=False" if not share else _why_not_shared(
        base, vision_rows, groups, prompt_ids, prompt_mask, token_ids
    )
    if stats.reason:
        logps, entropies = _per_row_logps(
            model, input_ids, attention_mask, logits_to_keep, vision_rows, batch_size, compute_entropy, token_ids
        )
        stats.lm_tokens, stats.vision_patches = stats.unshared_lm_tokens, stats.unshared_vision_patches
        return SharedLogProbs(logps, entropies, stats)

    stats.shared = True
    logps, entropies = _shared_logps(
        model, base, input_ids, attention_mask, logits_to_keep, vision_rows, groups, batch_size, compute_entropy,
        token_ids, stats,
    )
    return SharedLogProbs(logps, entropies, stats)


# ---------------------------------------------------------------------------------------------- generation
def generate_with_shared_prefill(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    vision_rows: Sequence[Mapping[str, Any] | None],
    *,
    groups: Sequence[int],
    share: bool = True,
    **generate_kwargs,
):
    """`model.generate` for left-padded prompts whose rows repeat (G per prompt), each unique prompt prefilled once.

    The unique prompts but their last token run through the model once (vision tower included) at the positions of
    Qwen's M-RoPE rule, their KV cache is expanded to every row of their group, and `generate` continues from it with
    the rule's decoding deltas, as it continues any cached generation. Greedy completions equal those of `generate`
    on every row, and the scores of every step agree within float rounding (so sampling draws from the same
    distributions). Without media, without a group of two rows or with `share=False`, this is a plain `generate`
    call with every row's vision tensors. Either way the model gets the position rule first (`apply_position_rule`),
    so `generate` places every token as the shared prefill does.

    Args:
        model: a Qwen2-VL, Qwen2.5-VL or Qwen3-VL model (possibly peft-wrapped), ready to generate.
        input_ids: `(rows, prompt_width)` left-padded prompt ids.
        attention_mask: same shape, 1 at real tokens.
        vision_rows: per row, its processor outputs or None.
        groups: group id per row (the rows of one prompt with its media).
        share: False for the plain call.
        **generate_kwargs: passed to `generate` (`generation_config`, `max_new_tokens`, ...).

    Returns:
        What `model.generate` returns (sequences start with `input_ids`).
    """
    base = _unwrap(model)
    token_ids = (getattr(base.config, "image_token_id", None), getattr(base.config, "video_token_id", None))
    if len(vision_rows) != input_ids.size(0):
        raise ValueError(
            f"{len(vision_rows)} vision rows for a batch of {input_ids.size(0)} prompts: pass one entry per row."
        )
    apply_position_rule(base)
    groups = _checked_groups(groups, input_ids, attention_mask, vision_rows)
    types = mm_token_type_ids(input_ids, *token_ids)
    reason = "share=False" if not share else _why_not_shared(
        base, vision_rows, groups, input_ids, attention_mask, token_ids, custom_mask=False
    )
    if reason:
        vision = _vision_inputs(vision_rows, input_ids.device)
        extra = {"mm_token_type_ids": types, **vision} if vision else {}
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, **extra, **generate_kwargs)
    firsts = list(dict.fromkeys(groups))  # group indices in order of first row
    first_row = {group: groups.index(group) for group in firsts}
    representatives = [first_row[group] for group in firsts]
    ids, mask = input_ids[representatives, :-1], attention_mask[representatives, :-1]
    prefill_rows = [vision_rows[i] for i in representatives]
    positions, deltas = _rule_index(base, ids, mask, prefill_rows, token_ids)
    with torch.no_grad():
        prefill = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            mm_token_type_ids=mm_token_type_ids(ids, *token_ids),
            use_cache=True,
            logits_to_keep=1,
            **_vision_inputs(prefill_rows, input_ids.device),
        )
    expand = torch.tensor([firsts.index(group) for group in groups], device=input_ids.device)
    cache = expanded_cache_argument(prefill, expand)  # each prompt's KV cache in every row of its group
    set_decode_deltas(base, deltas[expand])  # the decode steps continue from each prompt's largest position + 1
    return model.generate(
        input_ids=input_ids, attention_mask=attention_mask, mm_token_type_ids=types, **cache, **generate_kwargs
    )
