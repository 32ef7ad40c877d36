"""The rollout engine (`RolloutEngine`): prompts prefilled once per group into a static KV cache, one decode step
(compiled or eager) per bucket shape, sampling through the processors of `rollout.sampling`; with its outputs
(`Rollout`, `RolloutStats`), the row buckets (`bucket_rows`) and the per-row vision tensors (`split_vision`)."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import internals
from ..configs import ENGINE_ATTENTION
from ..positions import POSITION_RULE_MODEL_TYPES, PositionRule, rope_index
from ..processing import VISION_KEYS, collate_vision, mm_token_type_ids
from .sampling import UnsupportedGenerationError, _eos_ids, logits_processors, resolve_generation_config
from .weights import GenerationWeights, _config_dtype, _transformers_model

__all__ = ["Rollout", "RolloutEngine", "RolloutStats", "bucket_rows", "split_vision"]

logger = logging.getLogger(__name__)


def bucket_rows(rows: int, buckets: Sequence[int] | None = None) -> int:
    """Rows of the cache and graph that serve a batch of `rows`: the smallest bucket that holds them.

    Args:
        rows: rows to generate.
        buckets: allowed sizes, ascending (None: powers of two).

    Returns:
        The bucket size (a batch larger than every bucket gets the next power of two).

    Example:
        >>> bucket_rows(6), bucket_rows(6, [4, 12, 24]), bucket_rows(30, [4, 12, 24])
        (8, 12, 32)
    """
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}.")
    for size in sorted(buckets or ()):
        if size >= rows:
            return size
    return 1 << (rows - 1).bit_length()


def split_vision(
    input_ids: torch.Tensor,
    vision: Mapping[str, torch.Tensor],
    *,
    image_token_id: int | None,
    video_token_id: int | None,
    merge_size: int,
) -> list[dict | None]:
    """Per-row vision tensors from the collated ones `generate` receives (the inverse of `collate_vision`).

    Images and videos are consumed in row order: a row with n image placeholder tokens takes the next images whose
    `prod(grid) / merge_size**2` tokens add up to n, and their `prod(grid)` patch rows of `pixel_values` (videos
    likewise, with one `second_per_grid_ts` each).

    Args:
        input_ids: `(rows, width)` prompt ids.
        vision: collated `pixel_values`, `image_grid_thw`, `pixel_values_videos`, `video_grid_thw`,
            `second_per_grid_ts` (any subset).
        image_token_id, video_token_id: the placeholder tokens (None: the model has no such input).
        merge_size: the vision tower's `spatial_merge_size`.

    Returns:
        One dict per row, or None for a row without media.

    Raises:
        UnsupportedGenerationError: the placeholders do not match the grids.

    Example:
        >>> ids = torch.tensor([[7, 9, 9, 8], [7, 8, 8, 8]])
        >>> rows = split_vision(ids, {"pixel_values": torch.zeros(8, 3), "image_grid_thw": torch.tensor([[1, 2, 4]])},
        ...                     image_token_id=9, video_token_id=None, merge_size=2)
        >>> rows[0]["pixel_values"].shape, rows[1]
        (torch.Size([8, 3]), None)
    """
    rows: list[dict] = [{} for _ in range(input_ids.size(0))]
    kinds = (("image", image_token_id, "pixel_values", "image_grid_thw"),
             ("video", video_token_id, "pixel_values_videos", "video_grid_thw"))
    for kind, token, pixel_key, grid_key in kinds:
        grids = vision.get(grid_key)
        if grids is None:
            continue
        sizes = grids.prod(-1).tolist()
        next_item, next_pixel = 0, 0
        for row, ids in enumerate(input_ids):
            wanted = int((ids == token).sum()) if token is not None else 0
            first, tokens = next_item, 0
            while tokens < wanted and next_item < len(sizes):
                tokens += sizes[next_item] // merge_size**2
                next_item += 1
            if tokens != wanted:
                raise UnsupportedGenerationError(
                    f"Row {row} has {wanted} {kind} placeholder tokens, but the {grid_key} left for it give "
                    f"{tokens}: pass the vision tensors of exactly these rows, in row order."
                )
            if next_item == first:
                continue
            patches = sum(sizes[first:next_item])
            rows[row][grid_key] = grids[first:next_item]
            rows[row][pixel_key] = vision[pixel_key][next_pixel : next_pixel + patches]
            next_pixel += patches
            if kind == "video" and "second_per_grid_ts" in vision:
                rows[row]["second_per_grid_ts"] = vision["second_per_grid_ts"][first:next_item]
        if next_item != len(sizes):
            raise UnsupportedGenerationError(
                f"{len(sizes) - next_item} of {len(sizes)} {grid_key} entries have no placeholder tokens in the "
                "prompts: pass the vision tensors of exactly these rows."
            )
    return [row or None for row in rows]


@dataclass
class RolloutStats:
    """What one `rollout` call did.

    Attributes:
        rows: rows generated.
        groups: unique prompts prefilled.
        bucket: rows of the cache and graph that served them.
        cache_length: positions of the static cache.
        steps: decode steps run (the completion width).
        new_tokens: completion tokens up to and including each row's end of sequence.
        prefill_seconds: prompt prefill and cache copy.
        decode_seconds: the decode loop.
    """

    rows: int = 0
    groups: int = 0
    bucket: int = 0
    cache_length: int = 0
    steps: int = 0
    new_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0


@dataclass
class Rollout:
    """The output of `RolloutEngine.rollout`.

    Attributes:
        sequences: `(rows, prompt_width + steps)`: the left-padded prompts, then the completions (padding after each
            row's end of sequence), as `generate` returns them.
        logprobs: `(rows, steps)` processed log-probs of the sampled tokens (0 after the end of sequence), or None.
        scores: per step, the processed scores `(rows, vocab)` (generate's `output_scores`), or None.
        stats: what the call did.
    """

    sequences: torch.Tensor
    logprobs: torch.Tensor | None = None
    scores: tuple[torch.Tensor, ...] | None = None
    stats: RolloutStats = field(default_factory=RolloutStats)


@dataclass
class _DecodeState:
    """The static buffers of one bucket shape; their addresses never change."""

    rows: int
    length: int
    cache: Any
    tokens: torch.Tensor  # (rows, 1) token fed at the next step
    positions: torch.Tensor  # (3, rows, 1) its M-RoPE position
    mask: torch.Tensor  # (rows, 1, 1, length): True / 0.0 where a row may attend
    compile_seconds: float = 0.0


def _decode_logits(language_model, head, tokens, positions, mask, cache) -> torch.Tensor:
    """The decode step: one token per row through the decoder (writing its keys and values into the static cache at
    the cache's current position), then the LM head; float32 logits `(rows, vocab)`."""
    hidden = internals.decoder_call(language_model, tokens, positions, mask, cache)
    return head(hidden[:, -1]).float()




class RolloutEngine:
    """Generation for GRPO rollouts and evaluation: shared prefill, static KV cache, a compiled decode step.

    Args:
        model: a Qwen2-VL, Qwen2.5-VL or Qwen3-VL model (possibly peft- or DDP-wrapped); sdpa or eager attention,
            no sliding-window layers.
        dtype: compute dtype of the generation weights and the KV cache (default: the dtype the model was loaded in,
            `model.config.dtype`). Pass `torch.bfloat16` for a bf16 run whose trainable weights are float32.
        merge_lora: with peft LoRA adapters, generate with merged dense copies `W0 + s * B @ A` in `dtype` (QLoRA
            option b: more memory, no adapter or 4-bit kernels in the step) instead of the adapters on their base
            (option a).
        compile: run the decode step through `torch.compile` (CUDA: a CUDA graph per bucket shape).
        compile_mode: torch.compile's mode (default: "reduce-overhead" on CUDA, inductor's default elsewhere).
        row_buckets: allowed row counts of the cache and graph (default: powers of two).
        length_multiple: cache lengths are multiples of this; a shape's cache is reused by any later call that fits.
        stop_check_every: decode steps between checks that every row has ended (each check waits for the device);
            the output is the same whatever the value, a few more random draws may be taken after the last row ends.

    Attributes:
        weights: the `GenerationWeights` generated with.
        compile_seconds: per `(rows, length)` shape, seconds spent compiling (0 without compile).
        cache_shapes: per row bucket, the length of its static cache.
        allocations: static caches allocated so far (a new bucket, or a longer cache for one).
        last_stats: the `RolloutStats` of the latest call.

    Example:
        ```python
        engine = RolloutEngine(model, compile=False)
        out = engine.rollout(input_ids, attention_mask, vision_rows, generation_config=config, groups=group_ids)
        completions = out.sequences[:, input_ids.size(1):]
        ```
    """

    def __init__(
        self,
        model,
        *,
        dtype: torch.dtype | None = None,
        merge_lora: bool = False,
        compile: bool = False,
        compile_mode: str | None = None,
        row_buckets: Sequence[int] | None = None,
        length_multiple: int = 256,
        stop_check_every: int = 8,
    ):
        base = _transformers_model(model)
        if getattr(base.config, "model_type", None) not in POSITION_RULE_MODEL_TYPES:
            raise UnsupportedGenerationError(
                f"The rollout engine generates with Qwen-VL models ({', '.join(POSITION_RULE_MODEL_TYPES)}); this "
                f"model is {getattr(base.config, 'model_type', None)!r}."
            )
        implementation = internals.attention_implementation(base.config)
        if implementation not in ENGINE_ATTENTION:
            raise UnsupportedGenerationError(
                f"The rollout engine runs sdpa or eager attention; this model uses {implementation!r}. Load it with "
                "attn_implementation='sdpa'."
            )
        if "sliding_attention" in (getattr(base.config.get_text_config(), "layer_types", None) or ()):
            raise UnsupportedGenerationError("The rollout engine does not support sliding-window attention layers.")
        if length_multiple < 1 or stop_check_every < 1:
            raise ValueError(
                f"length_multiple and stop_check_every must be at least 1, got {length_multiple} and {stop_check_every}."
            )
        self.model = model
        self.dtype = dtype or _config_dtype(base)
        self.weights = GenerationWeights(model, self.dtype, merge_lora=merge_lora)
        self.compile = compile
        self.row_buckets = tuple(row_buckets) if row_buckets else None
        self.length_multiple = length_multiple
        self.stop_check_every = stop_check_every
        self.compile_seconds: dict[tuple[int, int], float] = {}
        self.allocations = 0
        self.last_stats = RolloutStats()
        self._eager_attention = implementation == "eager"
        self._decoder = internals.language_model(self.weights.module)
        self._head = self.weights.module.get_output_embeddings()
        self._states: dict[int, _DecodeState] = {}
        self._step = _decode_logits
        if compile:
            device = next(base.parameters()).device
            mode = compile_mode or ("reduce-overhead" if device.type == "cuda" else None)
            self._step = torch.compile(_decode_logits, mode=mode, dynamic=False)
        config = base.config
        self._rule = PositionRule.from_config(config)
        self._token_ids = (getattr(config, "image_token_id", None), getattr(config, "video_token_id", None))
        self._merge_size = getattr(getattr(config, "vision_config", None), "spatial_merge_size", 2)

    # -------------------------------------------------------------------------------------------- weights
    def rebuild(self) -> None:
        """Builds the generation weights again from the policy (after its weights changed dtype or were replaced);
        the static caches are kept, and a compiled step is compiled again for each of their shapes."""
        self.weights = GenerationWeights(self.model, self.dtype, merge_lora=self.weights.merge_lora)
        self._decoder = internals.language_model(self.weights.module)
        self._head = self.weights.module.get_output_embeddings()
        if self.compile:
            for state in self._states.values():
                self._warm(state)

    def refresh(self) -> None:
        """Rewrites the generation copies from the policy in place; call it after each optimizer step (a no-op when
        the engine generates with the policy's own tensors)."""
        self.weights.refresh()

    def refresh_after(self, optimizer: torch.optim.Optimizer):
        """Calls `refresh()` after every `optimizer.step()`; returns the hook handle (`handle.remove()` stops it)."""
        return optimizer.register_step_post_hook(lambda *_: self.refresh())

    # -------------------------------------------------------------------------------------------- shapes
    @property
    def device(self) -> torch.device:
        return next(self.weights.module.parameters()).device

    def _state(self, rows: int, length: int) -> _DecodeState:
        """The static buffers of a bucket: reused when long enough, else (re)allocated at the rounded length."""
        from transformers import StaticCache

        bucket = bucket_rows(rows, self.row_buckets)
        state = self._states.get(bucket)
        if state is not None and state.length >= length:
            return state
        length = -(-length // self.length_multiple) * self.length_multiple
        device = self.device
        mask_dtype = self.dtype if self._eager_attention else torch.bool
        state = _DecodeState(
            rows=bucket,
            length=length,
            cache=StaticCache(config=self.weights.module.config, max_cache_len=length),
            tokens=internals.mark_static(torch.zeros(bucket, 1, dtype=torch.long, device=device)),
            positions=internals.mark_static(torch.zeros(3, bucket, 1, dtype=torch.long, device=device)),
            mask=internals.mark_static(torch.zeros(bucket, 1, 1, length, dtype=mask_dtype, device=device)),
        )
        self._states[bucket] = state
        self.allocations += 1
        if self.compile:
            self._warm(state)
        return state

    @property
    def cache_shapes(self) -> dict[int, int]:
        """Per row bucket, the length of its static cache."""
        return {rows: state.length for rows, state in self._states.items()}

    def _allow(self, state: _DecodeState, where) -> None:
        """Lets rows attend to the cache positions `where` (an index or a `(rows, length)` bool tensor)."""
        if self._eager_attention:
            if isinstance(where, torch.Tensor):
                state.mask[:, 0, 0].masked_fill_(where, 0.0)
            else:
                state.mask[:, 0, 0, where] = 0.0
        elif isinstance(where, torch.Tensor):
            state.mask[:, 0, 0] |= where
        else:
            state.mask[:, 0, 0, where] = True

    def _clear(self, state: _DecodeState) -> None:
        if self._eager_attention:
            state.mask.fill_(torch.finfo(state.mask.dtype).min)
        else:
            state.mask.fill_(False)

    def _run_step(self, state: _DecodeState) -> torch.Tensor:
        if self.compile and state.mask.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        return self._step(self._decoder, self._head, state.tokens, state.positions, state.mask, state.cache)

    @torch.no_grad()
    def _warm(self, state: _DecodeState, calls: int = 3) -> None:
        """Compiles (and on CUDA records) the step for a new shape on dummy inputs; the time goes to
        `compile_seconds`. The cache is reset before real use."""
        started = time.perf_counter()
        with torch.autocast(state.mask.device.type, enabled=False):
            self._clear(state)
            self._allow(state, slice(0, calls))
            state.tokens.zero_()
            state.positions.zero_()
            state.cache.reset()
            # Lazy allocation of the static layers at the bucket's shape, outside the compiled region.
            for layer, (keys, values) in enumerate(self._dummy_states(state)):
                state.cache.update(keys, values, layer)
            state.cache.reset()
            for _ in range(calls):
                self._run_step(state)
        if state.mask.device.type == "cuda":
            torch.cuda.synchronize()
        state.compile_seconds = time.perf_counter() - started
        self.compile_seconds[(state.rows, state.length)] = state.compile_seconds
        logger.info("rollout engine: compiled the decode step for %d rows x %d positions in %.1f s",
                    state.rows, state.length, state.compile_seconds)

    def _dummy_states(self, state: _DecodeState):
        text = self.weights.module.config.get_text_config()
        heads = text.num_key_value_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        empty = torch.zeros(state.rows, heads, 1, head_dim, dtype=self.dtype, device=state.mask.device)
        return [(empty, empty)] * text.num_hidden_layers

    def warmup(self, rows: int, length: int) -> float:
        """Allocates (and with `compile=True` compiles) the shape serving `rows` x `length` ahead of the first
        rollout; returns its compile seconds."""
        return self._state(rows, length).compile_seconds

    # -------------------------------------------------------------------------------------------- prefill
    def _positions(self, input_ids, attention_mask, vision_rows) -> torch.Tensor:
        """M-RoPE positions `(3, rows, width)` of left-padded prompts by Qwen's rule (`positions.rope_index`),
        whatever the installed transformers computes; padding positions are 0 and never attended."""
        grids = {
            key: torch.cat([row[key] for row in vision_rows if row and key in row])
            for key in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")
            if any(row and key in row for row in vision_rows)
        }
        positions, _ = rope_index(self._rule, input_ids, attention_mask, **grids)
        return positions

    def _prefill(self, input_ids, attention_mask, vision_rows):
        """Runs the unique prompts through the model; returns the float32 logits of their last token, their caches'
        `(keys, values)` per layer and their positions."""
        module = self.weights.module
        positions = self._positions(input_ids, attention_mask, vision_rows)
        vision = {key: value.to(input_ids.device) for key, value in collate_vision(vision_rows).items()}
        if vision:
            vision["mm_token_type_ids"] = mm_token_type_ids(input_ids, *self._token_ids)
        outputs = module.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True, **vision
        )
        logits = module.get_output_embeddings()(outputs.last_hidden_state[:, -1]).float()
        return logits, internals.cache_states(internals.forward_cache(outputs)), positions

    # -------------------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def rollout(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        vision_rows: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        generation_config,
        groups: Sequence[int],
        return_logprobs: bool = False,
        output_scores: bool = False,
    ) -> Rollout:
        """Generates a completion for every row of left-padded prompts.

        Args:
            input_ids: `(rows, prompt_width)` left-padded prompt ids.
            attention_mask: same shape, 1 at real tokens (default: all ones).
            vision_rows: per row, its processor outputs (`pixel_values`, `image_grid_thw`, `pixel_values_videos`,
                `video_grid_thw`, `second_per_grid_ts`; any subset) or None (default: no media).
            generation_config: a `transformers.GenerationConfig` (resolved as `generate` resolves it).
            groups: group id per row (the rows of one prompt with its media, fixed where the batch was built:
                `prompt_sharing.generation_groups` in the trainer); each group is prefilled once.
            return_logprobs: also return the processed log-probs of the sampled tokens.
            output_scores: also return the processed scores of every step.

        Returns:
            A `Rollout`.

        Raises:
            UnsupportedGenerationError: a generation setting the engine does not reproduce, prompts that are not
                left-padded, or groups whose rows differ.
        """
        started = time.perf_counter()
        self.weights.check()
        base = self.weights.source
        config = resolve_generation_config(generation_config, base)
        device = self.device
        input_ids = input_ids.to(device)
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(device)
        rows, width = input_ids.shape
        vision_rows = list(vision_rows) if vision_rows is not None else [None] * rows
        if len(vision_rows) != rows:
            raise UnsupportedGenerationError(f"{len(vision_rows)} vision rows for {rows} prompts: pass one per row.")
        if not bool(attention_mask[:, -1].all()):
            raise UnsupportedGenerationError(
                "Every prompt must end in a real token (left padding): rows "
                f"{torch.nonzero(attention_mask[:, -1] == 0).flatten().tolist()} end in padding."
            )
        steps = config.max_new_tokens if config.max_new_tokens is not None else config.max_length - width
        if steps < 1:
            raise UnsupportedGenerationError(
                f"Nothing to generate: max_new_tokens={config.max_new_tokens}, max_length={config.max_length}, "
                f"prompt width {width}. Set max_new_tokens."
            )
        groups = self._groups(input_ids, attention_mask, vision_rows, groups)
        firsts = list(dict.fromkeys(groups))
        representatives = [groups.index(group) for group in firsts]
        expand = torch.tensor([firsts.index(group) for group in groups], device=device)

        eos = torch.tensor(_eos_ids(config), dtype=torch.long, device=device)
        pad = config.pad_token_id
        if pad is None:
            pad = int(eos[0]) if eos.numel() else 0
        processors = logits_processors(config, attention_mask)
        with torch.autocast(device.type, enabled=False):
            logits, states, positions = self._prefill(
                input_ids[representatives], attention_mask[representatives], [vision_rows[i] for i in representatives]
            )
            state = self._state(rows, width + steps)
            bucket = state.rows
            fill = torch.cat([expand, expand.new_zeros(bucket - rows)])  # bucket rows beyond the batch copy row 0
            state.cache.reset()
            for layer, (keys, values) in enumerate(states):
                state.cache.update(keys[fill].to(self.dtype), values[fill].to(self.dtype), layer)
            self._clear(state)
            prompt_mask = torch.zeros(bucket, state.length, dtype=torch.bool, device=device)
            prompt_mask[:, :width] = attention_mask[torch.cat([torch.arange(rows, device=device),
                                                               fill.new_zeros(bucket - rows)])].bool()
            self._allow(state, prompt_mask)
            largest = positions.masked_fill(~attention_mask[representatives].bool()[None], -1).amax(dim=(0, 2))
            # The position of each prompt's last token; each step feeds its token one further on.
            state.positions.copy_(largest[fill].view(1, bucket, 1).expand(3, -1, -1))
            state.tokens.fill_(pad)
            logits = logits[expand]
            prefilled = time.perf_counter()

            history = torch.full((rows, width + steps), pad, dtype=torch.long, device=device)
            history[:, :width] = input_ids
            unfinished = torch.ones(rows, dtype=torch.bool, device=device)
            logprobs = torch.zeros(rows, steps, device=device) if return_logprobs else None
            scores_out = []
            done = 0
            for step in range(steps):
                if step > 0:  # clone: a CUDA graph's output is overwritten by its next replay
                    logits = self._run_step(state)[:rows].clone()
                scores = processors(history[:, : width + step], logits)
                if output_scores:
                    scores_out.append(scores)
                if config.do_sample:
                    tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
                else:
                    tokens = scores.argmax(dim=-1)
                tokens = torch.where(unfinished, tokens, pad)
                if logprobs is not None:
                    chosen = torch.log_softmax(scores, dim=-1).gather(1, tokens[:, None]).squeeze(1)
                    logprobs[:, step] = torch.where(unfinished, chosen, 0.0)
                history[:, width + step] = tokens
                if eos.numel():
                    unfinished &= ~torch.isin(tokens, eos)
                done = step + 1
                # Whether every row has ended is a device-to-host read: asked every `stop_check_every` steps, so a
                # GPU runs ahead between checks (steps run after the last row ended are trimmed below).
                if done == steps or (done % self.stop_check_every == 0 and not bool(unfinished.any())):
                    break
                # The next step feeds these tokens at the next position, attending to their own slot.
                state.tokens[:rows, 0] = tokens
                self._allow(state, width + step)
                state.positions.add_(1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        finished = time.perf_counter()
        completion = history[:, width : width + done]
        ended = torch.isin(completion, eos) if eos.numel() else torch.zeros_like(completion, dtype=torch.bool)
        # Tokens up to and including the first end of sequence (all of them in a row that never ends).
        lengths = torch.where(ended.any(1), ended.int().argmax(1) + 1, done)
        done = int(lengths.max())  # generate stops at the step where the last row ends
        sequences = history[:, : width + done]
        self.last_stats = RolloutStats(
            rows=rows, groups=len(firsts), bucket=state.rows, cache_length=state.length, steps=done,
            new_tokens=int(lengths.sum()), prefill_seconds=prefilled - started, decode_seconds=finished - prefilled,
        )
        return Rollout(
            sequences=sequences,
            logprobs=logprobs[:, :done] if logprobs is not None else None,
            scores=tuple(scores_out[:done]) if output_scores else None,
            stats=self.last_stats,
        )

    def _groups(self, input_ids, attention_mask, vision_rows, groups) -> list[int]:
        groups = [int(g) for g in groups]
        if len(groups) != input_ids.size(0):
            raise UnsupportedGenerationError(f"{len(groups)} group indices for {input_ids.size(0)} prompts.")
        first: dict[int, int] = {}
        for row, group in enumerate(groups):
            head = first.setdefault(group, row)
            if not (torch.equal(input_ids[head], input_ids[row]) and torch.equal(attention_mask[head], attention_mask[row])):
                raise UnsupportedGenerationError(
                    f"Rows {head} and {row} are both in group {group} but their prompts differ: a group holds the "
                    "rows of one prompt."
                )
        return groups

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, generation_config=None,
                 *, vision_rows: Sequence[Mapping[str, Any] | None] | None = None,
                 groups: Sequence[int] | None = None, **kwargs):
        """A stand-in for `model.generate` as trl and the package call it.

        Takes what `generate` takes on those paths: left-padded `input_ids` and `attention_mask`, the collated vision
        tensors (split per row with `split_vision`) or per-row `vision_rows`, `mm_token_type_ids` (recomputed, so
        ignored), a `generation_config` and generation settings as keywords (applied to a copy of it). `groups`, the
        rows' group ids, lets each group's prompt be prefilled once; without them every row is prefilled on its own,
        as `generate` does.

        Returns:
            The `prompt + completion` sequences, or a `GenerateDecoderOnlyOutput` (sequences, and scores with
            `output_scores`) when the config sets `return_dict_in_generate`.

        Raises:
            UnsupportedGenerationError: a keyword that is neither a model input the engine takes nor a generation
                setting.
        """
        from transformers import GenerationConfig
        from transformers.generation import GenerateDecoderOnlyOutput

        vision = {key: kwargs.pop(key) for key in VISION_KEYS if key in kwargs and kwargs[key] is not None}
        kwargs.pop("mm_token_type_ids", None)
        config = copy.deepcopy(generation_config) if generation_config is not None else GenerationConfig()
        unknown = config.update(**kwargs)
        if unknown:
            raise UnsupportedGenerationError(
                f"RolloutEngine.generate does not take {sorted(unknown)}: pass prompts, their vision tensors and "
                "generation settings."
            )
        if vision_rows is None and vision:
            vision_rows = split_vision(input_ids, vision, image_token_id=self._token_ids[0],
                                       video_token_id=self._token_ids[1], merge_size=self._merge_size)
        groups = range(input_ids.size(0)) if groups is None else groups
        out = self.rollout(input_ids, attention_mask, vision_rows, generation_config=config, groups=groups,
                           output_scores=bool(config.output_scores and config.return_dict_in_generate))
        if config.return_dict_in_generate:
            return GenerateDecoderOnlyOutput(sequences=out.sequences, scores=out.scores)
        return out.sequences
