"""M-RoPE positions of Qwen-VL prompts by Qwen's original rule, the one the pretrained models and vLLM use.

Qwen2-VL, Qwen2.5-VL and Qwen3-VL give every token three rotary positions (temporal, height, width):

- a text token advances all three together, one step per token;
- a vision block (an image, a video, or for Qwen3-VL one frame of a video) starting at position `s`, with merged
  grid `t x h x w`, gives its token at `(i, j, k)` the positions `s + floor(i * seconds_per_grid * tokens_per_second)`
  (Qwen2.5-VL video; Qwen2-VL and images: `s + i`), `s + j` and `s + k`;
- the text after a block starts at the block's largest position + 1 (temporal, height or width, whichever reaches
  furthest);
- decoding continues from the prompt's largest position + 1 (`rope_deltas`).

transformers 5.3 to 5.25 start the text after a Qwen2/2.5-VL video at `s + max(h, w)` instead, whatever the
temporal positions reach, and 5.0 to 5.17 truncate `seconds_per_grid` to an integer (README, "M-RoPE positions");
vLLM follows the rule above. This module computes the rule from the token ids and the grids alone, so
that every pass this package drives (generation, the log-prob passes, SFT, evaluation, curation) uses the same
positions whatever transformers version is installed: `videorft_hf.internals.apply_position_rule` installs it as a
model's `get_rope_index`, and `videorft_hf.prompt_sharing` calls it directly.

Qwen3-VL splits each video into one `t = 1` block per frame with timestamp text between frames, so its temporal
positions never reach past the spatial ones: there transformers 5.x and this rule agree.

The temporal product is computed in float64 (as vLLM computes it) from the float `second_per_grid_ts` the processor
returns, and floored.

Example:
    ```python
    from videorft_hf.positions import PositionRule, rope_index

    rule = PositionRule.from_config(model.config)
    positions, deltas = rope_index(
        rule, input_ids, attention_mask, video_grid_thw=video_grid_thw, second_per_grid_ts=second_per_grid_ts
    )
    positions.shape  # (3, batch, length); padding positions are 0
    ```
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["POSITION_RULE_MODEL_TYPES", "PositionRule", "block_positions", "rope_index"]

# Model types whose positions follow this rule (by `config.model_type`, never by checkpoint name).
POSITION_RULE_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")
_IMAGE, _VIDEO = 1, 2  # `mm_token_type_ids` values, as the Qwen-VL processors write them


@dataclass(frozen=True)
class PositionRule:
    """What the rule needs to know about a model.

    Attributes:
        model_type: `config.model_type` (one of `POSITION_RULE_MODEL_TYPES`).
        image_token_id: the image placeholder token.
        video_token_id: the video placeholder token.
        spatial_merge_size: patches merged per side into one token (2 in every Qwen-VL release).
        tokens_per_second: temporal positions per second of video (Qwen2.5-VL's `vision_config.tokens_per_second`,
            2 in its checkpoints); None when a temporal grid step is one position (Qwen2-VL, Qwen3-VL).
        frames_as_blocks: each video frame is its own block, with text between frames (Qwen3-VL).
    """

    model_type: str
    image_token_id: int | None
    video_token_id: int | None
    spatial_merge_size: int
    tokens_per_second: float | None = None
    frames_as_blocks: bool = False

    @classmethod
    def from_config(cls, config) -> PositionRule:
        """The rule of a model, from its `PretrainedConfig`.

        Args:
            config: a Qwen2-VL, Qwen2.5-VL, Qwen3-VL or Qwen3-VL-MoE config.

        Returns:
            The model's `PositionRule`.

        Raises:
            ValueError: another model type.

        Example:
            >>> from videorft_hf.testing import build_tiny_vlm_config
            >>> PositionRule.from_config(build_tiny_vlm_config("qwen2_5_vl")).tokens_per_second
            2.0
        """
        model_type = getattr(config, "model_type", None)
        if model_type not in POSITION_RULE_MODEL_TYPES:
            raise ValueError(
                f"The M-RoPE position rule covers {', '.join(POSITION_RULE_MODEL_TYPES)}; this model is "
                f"{model_type!r}."
            )
        vision = config.vision_config
        tokens_per_second = None
        if model_type == "qwen2_5_vl":
            tokens_per_second = float(vision.tokens_per_second)
        return cls(
            model_type=model_type,
            image_token_id=getattr(config, "image_token_id", None),
            video_token_id=getattr(config, "video_token_id", None),
            spatial_merge_size=int(vision.spatial_merge_size),
            tokens_per_second=tokens_per_second,
            frames_as_blocks=model_type in ("qwen3_vl", "qwen3_vl_moe"),
        )


def block_positions(start: int, grid: tuple[int, int, int], temporal_step: float = 1.0) -> torch.Tensor:
    """Positions `(3, t * h * w)` of one vision block starting at `start`, in the processor's token order.

    Args:
        start: the block's first position (the position the next text token would have).
        grid: the merged grid `(t, h, w)`: temporal steps and tokens per column and row after the spatial merge.
        temporal_step: positions per temporal grid step (`seconds_per_grid * tokens_per_second` for a Qwen2.5-VL
            video, else 1); the temporal offset of step `i` is `floor(i * temporal_step)`, computed in float64.

    Returns:
        A long tensor; row 0 temporal, 1 height, 2 width.

    Example:
        >>> block_positions(10, (2, 1, 2), temporal_step=3.75 * 2).tolist()
        [[10, 10, 17, 17], [10, 10, 10, 10], [10, 11, 10, 11]]
    """
    t, h, w = grid
    temporal = torch.floor(torch.arange(t, dtype=torch.float64) * float(temporal_step)).long()
    grid_t, grid_h, grid_w = torch.meshgrid(temporal, torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([grid_t, grid_h, grid_w]).reshape(3, -1) + start


def _blocks(rule: PositionRule, image_grid_thw, video_grid_thw, second_per_grid_ts):
    """Per modality, an iterator over its blocks in prompt order: `(merged grid, temporal step)`."""
    merge = rule.spatial_merge_size

    def images() -> Iterator[tuple[tuple[int, int, int], float]]:
        for t, h, w in ([] if image_grid_thw is None else image_grid_thw.tolist()):
            yield (int(t), int(h) // merge, int(w) // merge), 1.0

    def videos() -> Iterator[tuple[tuple[int, int, int], float]]:
        seconds = None if second_per_grid_ts is None else torch.as_tensor(second_per_grid_ts).flatten().tolist()
        for index, (t, h, w) in enumerate([] if video_grid_thw is None else video_grid_thw.tolist()):
            grid = (int(t), int(h) // merge, int(w) // merge)
            if rule.frames_as_blocks:  # one block per frame, each at t = 1
                for _ in range(grid[0]):
                    yield (1, grid[1], grid[2]), 1.0
                continue
            step = 1.0
            if rule.tokens_per_second is not None:
                # Qwen's default without `second_per_grid_ts` is one second per grid.
                second = 1.0 if seconds is None else float(seconds[index])
                step = second * rule.tokens_per_second
            yield grid, step

    return {_IMAGE: images(), _VIDEO: videos()}


def _token_types(rule: PositionRule, input_ids: torch.Tensor, mm_token_type_ids) -> torch.Tensor:
    # The placeholder tokens decide: some processors (transformers 5.17's Qwen2.5-VL one among them) leave
    # `mm_token_type_ids` all 0, and a batch built from their output would put the video at text positions.
    if rule.image_token_id is None and rule.video_token_id is None and mm_token_type_ids is not None:
        return torch.as_tensor(mm_token_type_ids)
    types = torch.zeros_like(input_ids)
    if rule.image_token_id is not None:
        types[input_ids == rule.image_token_id] = _IMAGE
    if rule.video_token_id is not None:
        types[input_ids == rule.video_token_id] = _VIDEO
    return types


def _row_positions(row: int, types: list[int], blocks: dict) -> torch.Tensor:
    """Positions `(3, len(types))` of one row's real tokens."""
    parts, start, index = [], 0, 0
    while index < len(types):
        kind = types[index]
        run = index
        while run < len(types) and types[run] == kind:
            run += 1
        if kind == 0:
            parts.append(torch.arange(start, start + run - index).expand(3, -1))
            start += run - index
            index = run
            continue
        while index < run:  # adjacent blocks of one modality make one run
            what = "image" if kind == _IMAGE else "video"
            try:
                grid, step = next(blocks[kind])
            except StopIteration:
                raise ValueError(
                    f"Row {row} has more {what} tokens than its {what}_grid_thw describes: pass the grids of every "
                    f"{what} of the batch, in row order."
                ) from None
            size = grid[0] * grid[1] * grid[2]
            if index + size > run:
                raise ValueError(
                    f"Row {row} has a run of {run - index} {what} tokens where its next {what} grid {grid} (merged) "
                    f"needs {size}: the grids do not match the prompt's placeholder tokens."
                )
            block = block_positions(start, grid, step)
            parts.append(block)
            start = int(block.max()) + 1
            index += size
    if not parts:
        return torch.zeros(3, 0, dtype=torch.long)
    return torch.cat(parts, dim=1)


def rope_index(
    rule: PositionRule,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    second_per_grid_ts: torch.Tensor | None = None,
    mm_token_type_ids: torch.Tensor | None = None,
    deltas_from_padded_length: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE positions of a batch of prompts (or prompts + completions) by Qwen's rule, and its decoding deltas.

    Args:
        rule: the model's `PositionRule`.
        input_ids: `(batch, length)` token ids, padded on either side.
        attention_mask: `(batch, length)`, 1 at real tokens (None: every token is real). Positions count real tokens
            only; padding gets 0.
        image_grid_thw: `(images, 3)` grids of every image of the batch, in row order then prompt order.
        video_grid_thw: `(videos, 3)` grids of every video, in the same order.
        second_per_grid_ts: `(videos,)` seconds per temporal grid (Qwen2.5-VL; 1.0 each when None).
        mm_token_type_ids: `(batch, length)`, 1 at image and 2 at video tokens; used only when the rule has no
            placeholder token ids (the vision tokens are found from `input_ids`: a processor may leave these all 0).
        deltas_from_padded_length: the deltas are relative to the padded length (transformers < 5.2, whose decoding
            adds them to the cache length) instead of each row's count of real tokens (transformers >= 5.2, whose
            decoding adds them to the real tokens' index).

    Returns:
        `(positions, deltas)`: positions `(3, batch, length)` long on `input_ids`'s device; deltas `(batch, 1)`, the
        prompt's largest position + 1 minus its token count, so a decoded token's position is its index plus the
        delta.

    Raises:
        ValueError: the vision tokens and the grids do not match.

    Example:
        >>> from videorft_hf.testing import build_tiny_vlm_config
        >>> rule = PositionRule.from_config(build_tiny_vlm_config("qwen2_5_vl"))
        >>> ids = torch.tensor([[7, rule.video_token_id, rule.video_token_id, 8]])
        >>> positions, deltas = rope_index(rule, ids, video_grid_thw=torch.tensor([[2, 2, 2]]),
        ...                                second_per_grid_ts=torch.tensor([3.0]))
        >>> positions[:, 0].tolist(), deltas.tolist()
        ([[0, 1, 7, 8], [0, 1, 1, 8], [0, 1, 1, 8]], [[5]])
    """
    batch, length = input_ids.shape
    types = _token_types(rule, input_ids, mm_token_type_ids).to("cpu")
    mask = None if attention_mask is None or attention_mask.dim() != 2 else attention_mask.to("cpu").bool()
    blocks = _blocks(rule, image_grid_thw, video_grid_thw, second_per_grid_ts)
    positions = torch.zeros(3, batch, length, dtype=torch.long)
    deltas = []
    for row in range(batch):
        real = mask[row] if mask is not None else torch.ones(length, dtype=torch.bool)
        row_positions = _row_positions(row, types[row][real].tolist(), blocks)
        positions[:, row, real] = row_positions
        largest = int(row_positions.max()) if row_positions.numel() else -1
        deltas.append(largest + 1 - (length if deltas_from_padded_length else int(real.sum())))
    device = input_ids.device
    return positions.to(device), torch.tensor(deltas, dtype=torch.long, device=device).unsqueeze(1)
