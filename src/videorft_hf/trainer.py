"""`VideoGRPOTrainer`: trl's `GRPOTrainer` with video reaching generation and every log-prob pass.

trl 1.16 tokenizes video prompts, but its log-prob passes (policy, old and reference) receive image tensors only,
so the loss is computed as if the video were text. This subclass overrides only the seams that lack video:

- `_generate_and_score_completions`: decodes each unique video (and image) of the generation batch once, with the
  run's `VideoSamplingConfig`, and carries the per-row vision tensors in the batch so that they survive trl's
  shuffling and splitting into micro-batches (`steps_per_generation`, `num_iterations`).
- `_tokenize_prompts`: runs the processor on text *and* media (frames with their `VideoMetadata`, so
  `second_per_grid_ts` and timestamps are right), checks that vision tokens match vision features, and hands the
  vision tensors to generation.
- `_get_per_token_logps_and_entropies`: scores each micro-batch with its own vision tensors, computing each unique
  prompt and its media once and letting its completions attend to it (`videorft_hf.prompt_sharing`; the same
  log-probs and gradients as per-row passes, `share_prompt_compute=False` turns it off).
- `_generate_single_turn`: vLLM (colocate or server mode) receives each row's frames with their metadata and its
  images (`videorft_hf.vllm_media.patched`, the only code that changes trl's `VLLMGeneration`, entered per call),
  generating from the same prompt ids the log-prob passes see. Without vLLM, with `generation_engine` resolved to
  "compiled" (`RunSettings.generation_engine`), trl's `generate` call runs on the rollout engine
  (`videorft_hf.rollout.RolloutEngine`, built at the first generation, its generation weights refreshed after each
  optimizer step); otherwise each group's prompt is prefilled once (`prompt_sharing.generate_with_shared_prefill`).
- `_prepare_inputs`: where the split cannot change the update, trl's row shuffle keeps each group's rows together,
  so the micro-batches hold whole groups and share each prompt once (`SPLIT_INVARIANT_LOSSES`).
- `_compute_loss`: points the log-prob pass at the micro-batch's vision tensors.
- `_calculate_rewards`: passes the decoded frames to reward functions as `frames` and applies the group-level
  shaping (length bonus, T-GRPO) to the rewards gathered from every process.

The seams hand the batch's media to each other through one `GenerationMedia` object, entered for the batch (and for
each loss micro-batch) and dropped in a `finally`, so that no seam depends on the order trl calls them in. Rows go to
model inputs through `videorft_hf.processing` only (`load_row_media`, `render_prompt`, `encode_prompt`), as in SFT and
evaluation; T-GRPO's shuffled rollouts render their prompts with the same arguments as the ordinary ones. The
policy and the reference model compute M-RoPE positions by Qwen's rule in every pass, transformers' generation
included (`videorft_hf.internals.apply_position_rule`).

The constructor has `GRPOTrainer.__init__`'s signature. Text batches, and batches whose rows all carry images and
no video, take trl's own path (image paths decoded first with the run's image pixel bounds), so a trl script on a
text or image dataset trains the same with this class in place of `GRPOTrainer`, with any processor family trl
supports. Batches with video, or image rows mixed with text rows or skipped samples, take this class's media path,
built for the Qwen-VL families (`processing.SUPPORTED_VIDEO_MODEL_TYPES`); video rows with any other model raise
`UnsupportedVideoModelError`. With vLLM (`use_vllm`), a Qwen-VL model's image batches take the media path too: trl
1.16 hands a colocated vLLM 0.31 prompts whose image placeholders are already expanded, which vLLM expands again, and
lets rollouts sample placeholder tokens.

Why one module of over 900 lines: it is one class, the trl seams it overrides, and the seams share one batch state
(`GenerationMedia`). What each seam delegates has a module of its own (`processing`, `prompt_sharing`, `vllm_media`,
`rollout`, `rewards.shaping`, `checkpoints`, `internals`); what remains here is the seam code itself, and splitting
the class into mixins would spread one object's state over several files.

Example:
    ```python
    from videorft_hf import VideoGRPOConfig, VideoGRPOTrainer, load_videorft_dataset
    from videorft_hf.rewards import accuracy_reward, format_reward

    dataset = load_videorft_dataset("path/to/VideoRFT-RL-310K", media_root="path/to/media")
    args = VideoGRPOConfig(output_dir="out", beta=0.04, loss_type="grpo", num_generations=8, length_bonus=True)
    trainer = VideoGRPOTrainer(
        "Qwen/Qwen2.5-VL-7B-Instruct", reward_funcs=[format_reward, accuracy_reward], args=args, train_dataset=dataset
    )
    trainer.train()
    ```
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from trl import GRPOTrainer, prepare_multimodal_messages
from trl.extras.profiling import profiling_context, profiling_decorator

if TYPE_CHECKING:
    from collections.abc import Callable

    from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict
    from peft import PeftConfig, PeftModel
    from transformers import (
        BitsAndBytesConfig,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        ProcessorMixin,
        TrainerCallback,
    )
    from trl import GRPOConfig

    from .internals import EnvironmentFactory, RewardFunc, RolloutFunc

from . import vllm_media
from .cards import videorft_tags, write_trainer_card
from .checkpoints import ResumeExactly
from .configs import VideoSamplingArguments
from .internals import (
    apply_position_rule,
    biased_log_probs,
    call_reward_functions,
    generate_replaced,
    is_vlm,
    keep_signature_column,
    log_metric,
    prompt_tools,
    row_shuffle,
    set_hub_tags,
    suppressed_tokens,
)
from .modeling import keep_updates
from .processing import (
    SUPPORTED_VIDEO_MODEL_TYPES,
    VISION_KEYS,
    RowMedia,
    UnsupportedVideoModelError,
    check_vision_tokens,
    collate_vision,
    encode_prompt,
    load_row_media,
    media_sources,
    mm_token_type_ids,
    render_prompt,
)
from .prompt_sharing import (
    generate_with_shared_prefill,
    generation_groups,
    keep_groups_together,
    shared_prompt_logps,
)
from .rewards.shaping import correct_completions, group_length_bonus, group_temporal_bonus, shuffled_correct_counts
from .rollout import RolloutEngine
from .settings import RunSettings
from .skips import SkipTally
from .video import FrameCache

logger = logging.getLogger(__name__)


@dataclass
class GenerationMedia:
    """One generation batch (or loss micro-batch), as the seams trl calls hand it to each other.

    `_generate_and_score_completions` creates it for every batch, with each row's `groups` (fixed there, as trl's
    sampler laid the batch out) and, on the media path, the decoded rows, and enters it (`_batch_scope`); inside, trl
    calls the seams in its own order and each gets it from `_active_batch(<seam>)`, which names the seam in its error
    when no batch is active: `_tokenize_prompts` sets `vision` (each row's processor outputs) and `template_ids`,
    encoding each group once; `_generate_single_turn` generates from `rows`, `vision` and `groups` (vLLM from `rows`
    and `template_ids`); `_get_per_token_logps_and_entropies` scores with `vision` and `groups`; `_calculate_rewards`
    reads `reward_rows`, `skipped`, `groups` and T-GRPO's `shuffled` counts. The scope ends in a `finally`, so no
    seam ever sees another batch's media. A batch on trl's own path (`encode=False`: text, or images only) uses only
    `groups`, `reward_rows` and `skipped`. T-GRPO's shuffled rollouts enter their own object inside the batch's, and
    each loss micro-batch enters one that holds its `vision` and `groups` (the batch fields `vision_inputs` and
    `group_ids`, which survive trl's shuffle and split).
    """

    rows: list[RowMedia] = field(default_factory=list)  # decoded media per row (skipped rows: `error` set)
    reward_rows: list[dict] | None = None  # the batch's dataset rows plus `frames`, for reward functions
    encode: bool = True  # this class encodes the prompts; False: the batch takes trl's own image path
    vision: list[dict | None] | None = None  # processor outputs per row (None: no media, or skipped)
    # per row, the prompt's token ids as the chat template writes them (one placeholder token per image or video):
    # what vLLM's colocated engine takes, expanding each placeholder itself (`vllm_media.MultimodalLLM`)
    template_ids: list[list[int]] | None = None
    shuffled: torch.Tensor | None = None  # T-GRPO (correct, rolled out) per local row
    # per row, its group's global id (`prompt_sharing.generation_groups`): the completions of one prompt
    groups: list[int] | None = None

    @property
    def skipped(self) -> list[bool]:
        """Rows skipped for bad media (on_bad_sample="skip")."""
        return [media.error is not None for media in self.rows]


def _reward_frames(media: RowMedia):
    """What reward functions receive as `frames` for a row: its first video's frames, else its first image."""
    if media.videos:
        return media.videos[0][0]
    if media.images:
        return media.images[0]
    return None


# Losses whose optimizer-step gradient does not depend on how a generation batch's rows are split into its equal-size
# micro-batches: a mean of per-sequence means per micro-batch (grpo), a fixed per-row normalizer (dr_grpo), or one
# normalizer for the whole generation batch (dapo).
SPLIT_INVARIANT_LOSSES = ("grpo", "dr_grpo", "dapo")


def _shuffle_keeping_groups(seq_dict: dict, trl_shuffle) -> dict:
    """trl's row shuffle of a generation batch (`shuffle_sequence_dict`), with each group's rows (the batch's
    `group_ids`) kept adjacent (`keep_groups_together`), so the micro-batches trl then cuts hold whole groups. One
    `torch.randperm` of the rows, as trl draws it. A batch without this class's vision rows is shuffled by trl's own
    function."""
    if seq_dict.get("vision_inputs") is None:
        return trl_shuffle(seq_dict)
    groups = seq_dict["group_ids"].tolist()
    order = keep_groups_together(torch.randperm(len(groups)).tolist(), groups)
    index = torch.tensor(order)

    def permute(value):
        if value is None or (isinstance(value, torch.Tensor) and value.ndim == 0):
            return value
        if isinstance(value, torch.Tensor):
            return value[index.to(value.device)]
        return [value[i] for i in order]

    return {key: permute(value) for key, value in seq_dict.items()}


def _as_list(groups) -> list[int] | None:
    return groups.tolist() if isinstance(groups, torch.Tensor) else groups


def _same_prompt(a, b) -> bool:
    """Whether two conversational prompts are equal (objects they share, such as a group's images, by identity)."""
    if a is b:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_prompt(a[key], b[key]) for key in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same_prompt(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


class _ModelWithInputs:
    """Calls `model` with extra keyword inputs (a micro-batch's vision tensors) added to every call."""

    def __init__(self, model, extra: dict[str, Any]):
        self.model = model
        self.extra = extra

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs, **self.extra)


def _with_decoded_images(inputs: list[dict], media: list) -> list[dict]:
    """The rows with their `image` / `images` replaced by the decoded images (in-memory images are unchanged)."""
    rows = []
    for row, row_media in zip(inputs, media, strict=True):
        row = dict(row)
        if row_media.error is not None:  # a skipped sample: trained on as a text prompt, with no loss
            row["prompt"] = _strip_media_blocks(row["prompt"])
        if row.get("images") is not None:
            row["images"] = list(row_media.images)
        elif row.get("image") is not None:
            row["image"] = row_media.images[0] if row_media.images else None
        rows.append(row)
    return rows


def _strip_media_blocks(prompt: list[dict]) -> list[dict]:
    """The prompt without its image and video placeholders (for a skipped sample: it is not trained on)."""
    stripped = []
    for message in prompt:
        content = message.get("content")
        if isinstance(content, list):
            content = [block for block in content if block.get("type") not in ("image", "video")]
        stripped.append({**message, "content": content})
    return stripped


class VideoGRPOTrainer(ResumeExactly, GRPOTrainer):
    """`trl.GRPOTrainer` for video: same arguments, plus the fields of `VideoGRPOConfig` when `args` is one.

    Reward functions receive, besides trl's keyword arguments and the dataset columns, `frames`: one entry per
    completion, the uint8 `(T, H, W, 3)` frames the policy saw for a video row (the same array object for every
    completion of a prompt), the PIL image for an image row, or `None` for a text row.
    """

    def __init__(
        self,
        model: str | PreTrainedModel | PeftModel,
        reward_funcs: RewardFunc | list[RewardFunc] | None = None,
        args: GRPOConfig | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Dataset
        | IterableDataset
        | DatasetDict
        | IterableDatasetDict
        | dict[str, Dataset | IterableDataset]
        | None = None,
        processing_class: PreTrainedTokenizerBase | ProcessorMixin | None = None,
        reward_processing_classes: PreTrainedTokenizerBase | list[PreTrainedTokenizerBase] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        quantization_config: BitsAndBytesConfig | None = None,
        peft_config: PeftConfig | None = None,
        tools: list[Callable] | None = None,
        rollout_func: RolloutFunc | None = None,
        environment_factory: EnvironmentFactory | dict[str, EnvironmentFactory] | None = None,
    ):
        # The signature is `GRPOTrainer.__init__`'s, parameter for parameter (checked by a test), so that any trl
        # script, positional or keyword, constructs this class unchanged.
        super().__init__(
            model,
            reward_funcs,
            args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            reward_processing_classes=reward_processing_classes,
            callbacks=callbacks,
            optimizers=optimizers,
            quantization_config=quantization_config,
            peft_config=peft_config,
            tools=tools,
            rollout_func=rollout_func,
            environment_factory=environment_factory,
        )
        config = self.model.config
        # Everything this class reads from the config, resolved once with the model (its vision tower's patch
        # factor); a plain `GRPOConfig` keeps working (drop-in), the video fields then take their defaults.
        # The rollout generator depends on the device, the sharding and the model (`resolve_generation_engine`).
        placement = {"device_type": self.accelerator.device.type, "sharded": self._parameters_sharded()}
        self.settings = (
            RunSettings.resolve(self.args, config, self.processing_class, **placement)
            if is_vlm(self)
            else RunSettings.resolve(self.args, config, **placement)
        )
        video = self.settings.video
        self._frame_cache = FrameCache(video.frame_cache_bytes) if video.frame_cache_bytes else None
        self._frame_store = self.settings.open_frame_store()  # this config's store only (None: decode every video)
        self._media: GenerationMedia | None = None  # the batch being generated or scored (`_media_scope`)
        # generation_engine="compiled": built at the first generation (`_engine_for`); the step its generation
        # weights were last refreshed at
        self._engine: RolloutEngine | None = None
        self._engine_step: int | None = None
        self.media_counts: Counter = Counter()  # decodes, reuses and skips, for logs and tests
        # Skipped rows over all processes, bounded per generation batch and per run (videorft_hf.skips).
        self.skip_tally = SkipTally(self.settings.skip_limit.max_skipped_fraction)
        self.add_callback(self.skip_tally)
        for func in self.reward_funcs:  # reward models load now, not at the first correct answer mid-training
            if callable(getattr(getattr(func, "encoder", None), "load", None)):
                func.encoder.load()

        self.image_token_id = getattr(config, "image_token_id", None)
        self.video_token_id = getattr(config, "video_token_id", None)

        shaping = self.settings.shaping
        if shaping.length_bonus or shaping.temporal_grpo:
            if shaping.accuracy_reward_name not in self.reward_func_names:
                raise ValueError(
                    f"Reward shaping needs the accuracy reward {shaping.accuracy_reward_name!r} among the "
                    f"reward functions {self.reward_func_names}; add it or set accuracy_reward_name."
                )
            if shaping.temporal_grpo and self.use_vllm and self.vllm_mode == "server" and self.accelerator.num_processes > 1:
                # The shuffled rollouts differ in number between processes, and server mode gathers every
                # process's prompts in one collective call that assumes equal shares.
                raise ValueError(
                    "temporal_grpo with vllm_mode='server' on several processes is not supported: use "
                    "vllm_mode='colocate' (each process generates its own shuffled rollouts) or one process."
                )
        # Trainable weights in float32 (frozen ones keep their dtype): bf16 would round lr 1e-6 updates away.
        keep_updates(self.model, self.args, trainable_dtype=self.settings.precision.trainable_dtype)
        # Qwen's M-RoPE rule for every pass of the policy and the reference model (transformers 5.3-5.25 misplace
        # the text after a video); the reference model may be a separate object (loaded by trl, beta > 0).
        for model in (self.model, self.ref_model):
            if model is not None:
                apply_position_rule(model)
        self._check_video_support(self.train_dataset, self.eval_dataset)

    def _parameters_sharded(self) -> bool:
        """Whether each process holds only a shard of the policy's parameters (FSDP, DeepSpeed ZeRO-3)."""
        if self.is_fsdp_enabled:
            return True
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None) if self.is_deepspeed_enabled else None
        return plugin is not None and plugin.zero_stage == 3

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        """The VideoRFT card of what ran (model, rewards, shaping, sampling, arguments), not trl's generic one."""
        write_trainer_card(self, "grpo", model_name, dataset_name, tags)

    def _check_video_support(self, *datasets) -> None:
        """Video rows with a model whose video inputs this package does not build fail here, before training."""
        if not is_vlm(self) or getattr(self.model.config, "model_type", None) in SUPPORTED_VIDEO_MODEL_TYPES:
            return
        from datasets import Dataset

        for dataset in datasets:
            for split in dataset.values() if isinstance(dataset, dict) else [dataset]:
                # Only a map-style dataset is scanned (one column); a streamed one is checked batch by batch.
                if isinstance(split, Dataset) and "video" in split.column_names and any(
                    v is not None for v in split["video"]
                ):
                    raise UnsupportedVideoModelError(self._unsupported_video_message("The dataset has video rows"))

    def _unsupported_video_message(self, what: str) -> str:
        model_type = getattr(self.model.config, "model_type", None)
        return (
            f"{what}, but video inputs are built for the model types {', '.join(SUPPORTED_VIDEO_MODEL_TYPES)} only; "
            f"this model is {model_type!r} ({type(self.model).__name__}). Train it on image or text rows, or use a "
            "Qwen-VL model for video."
        )

    @property
    def vision_placeholder_ids(self) -> list[int]:
        """The model's image and video placeholder tokens, which a rollout on the media path never samples."""
        return [t for t in (self.image_token_id, self.video_token_id) if t is not None]

    @contextmanager
    def _vision_placeholders_suppressed(self):
        """While a batch on this class's media path generates with transformers, neither the image nor the video
        placeholder can be sampled (a sampled one would mismatch the vision features). Other batches keep trl's
        generation settings. (vLLM: `vllm_media.patched` sets a logit bias around each generation call.)"""
        if self.use_vllm:
            yield
            return
        with suppressed_tokens(self, self.vision_placeholder_ids):
            yield

    def _set_signature_columns_if_needed(self):
        # Adds: the `video` column survives `remove_unused_columns=True` (trl keeps only prompt/image/images).
        super()._set_signature_columns_if_needed()
        keep_signature_column(self, "video")

    # ------------------------------------------------------------------------------------------ media
    @profiling_decorator
    def _load_media(self, inputs: list[dict]) -> list[RowMedia]:
        """Decodes each unique video and image of the batch once (`processing.load_row_media` with one memo for the
        batch); rows of the same prompt share the arrays. A bad file raises, or (on_bad_sample="skip") leaves its
        row's `error` set, counted and logged."""
        decoded: dict[tuple, Any] = {}
        rows = []
        for index, row in enumerate(inputs):
            media = load_row_media(
                row,
                self.settings.sampling,
                backend=self.settings.video.video_backend,
                cache=self._frame_cache,
                store=self._frame_store,
                decoded=decoded,
                counts=self.media_counts,
                errors="capture",
            )
            if media.error is not None:
                self._handle_bad_sample(index, row, media.error)
            rows.append(media)
        return rows

    @property
    def _skip_hint(self) -> str:
        if isinstance(self.args, VideoSamplingArguments):
            return "set on_bad_sample='skip' to skip such samples"
        return "to skip such samples, train with videorft_hf.VideoGRPOConfig(..., on_bad_sample='skip')"

    def _handle_bad_sample(self, index: int, row: dict, error: Exception) -> None:
        name = f"row {index} (problem_id={row.get('problem_id')!r})" if "problem_id" in row else f"row {index}"
        if self.settings.video.on_bad_sample == "raise":
            raise type(error)(
                getattr(error, "path", "?"),
                f"{getattr(error, 'cause', error)} [{name} of the generation batch; {self._skip_hint}]",
            ) from error
        self.media_counts["skipped_samples"] += 1
        # The G rows of a prompt share its media: one message per prompt and file.
        self.skip_tally.note([f"problem_id={row['problem_id']!r}: {error}" if "problem_id" in row else str(error)])
        logger.warning("Skipping %s: %s (%d skipped so far)", name, error, self.media_counts["skipped_samples"])

    @contextmanager
    def _batch_scope(self, media: GenerationMedia) -> Iterator[GenerationMedia]:
        """Makes `media` the batch the seams read (`_active_batch`) until the block ends, then restores the enclosing
        one (none outside a batch)."""
        outer, self._media = self._media, media
        try:
            yield media
        finally:
            self._media = outer

    @contextmanager
    def generation_batch(self, rows: list[dict], groups: Sequence[int] | None = None) -> Iterator[GenerationMedia]:
        """Rows of your own as one generation batch of the media path: their media decoded as in training (each
        unique video once, with the run's settings) and the batch entered until the block ends, so that trl's seams
        called inside it (`_tokenize_prompts`, `_generate_single_turn`, `_get_per_token_logps_and_entropies`) work on
        it as they do inside `_generate_and_score_completions`. For looking at what the model sees, and for tests.

        Args:
            rows: dataset rows (`prompt`, and `video` / `image` / `images`).
            groups: each row's group (the rows of one prompt); default: each row its own.

        Yields:
            The batch's `GenerationMedia` (`_tokenize_prompts` sets its `vision` and `template_ids`).

        Example:
            >>> with trainer.generation_batch(rows) as batch:  # doctest: +SKIP
            ...     prompt_ids, _, _ = trainer._tokenize_prompts([row["prompt"] for row in rows])
            >>> batch.vision[0]["video_grid_thw"]  # doctest: +SKIP
        """
        media = GenerationMedia(
            self._load_media(rows),
            reward_rows=[dict(row) for row in rows],
            groups=list(range(len(rows))) if groups is None else [int(group) for group in groups],
        )
        with self._batch_scope(media):
            yield media

    def _active_batch(self, seam: str) -> GenerationMedia:
        """The batch a seam works on: the one `_generate_and_score_completions` (or `_compute_loss`, for a loss
        micro-batch) entered.

        Raises:
            RuntimeError: naming `seam`, when it runs outside any batch.
        """
        if self._media is None:
            raise RuntimeError(
                f"VideoGRPOTrainer.{seam} ran outside a generation batch: trl calls it from "
                "_generate_and_score_completions or _compute_loss, which give it the batch's media, groups and vision "
                "inputs. Call those (or trainer.train()) rather than the seam itself."
            )
        return self._media

    def _encode_prompt(
        self, prompt: list[dict], media: RowMedia, index: int, tools: list | None
    ) -> tuple[list[int], dict, list[int]]:
        """A generation prompt's token ids and vision tensors: rendered with the arguments trl's `_tokenize_prompts`
        uses (the trainer's chat template and template kwargs, and the row's tools: its environment's when
        `environment_factory` is a dict), encoded with its media, vision tokens checked. Every rollout (T-GRPO's
        shuffled ones too) is encoded here. Also returns the rendered prompt's token ids before the processor expands
        its media placeholders (`GenerationMedia.template_ids`).

        Args:
            prompt: the row's conversational prompt.
            media: its decoded media.
            index: its row in the generation batch, for errors.
            tools: the tools its prompt is rendered with (`internals.prompt_tools`), or None.

        Raises:
            VisionTokenMismatchError: naming the row.
        """
        text = render_prompt(
            self.processing_class, prompt, tools=tools, chat_template=self.chat_template, **self.chat_template_kwargs
        )
        where = f"Row {index} of the generation batch"
        ids, vision = encode_prompt(self.processing_class, text, media.videos, media.images, where)
        check_vision_tokens(self.processing_class, ids, vision, self.model.config, where)
        template_ids = self.processing_class.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids, vision, template_ids

    # ------------------------------------------------------------------------------------------ seams
    def _generate_and_score_completions(self, inputs):
        # Adds: each row's group, fixed here and carried by the batch (`group_ids`); media decoded by this package
        # (each unique video once, image paths with the run's sampling rules). A batch whose rows all carry images and
        # no video then takes trl's own image path, as with GRPOTrainer (not with vLLM and a Qwen-VL model: see the
        # module docstring); any other batch with media (video, or image rows mixed with text or skipped rows) takes
        # this class's path, which carries per-row vision tensors in the batch and is built for Qwen-VL models.
        groups = self._generation_groups(len(inputs))
        if not is_vlm(self) or not any(media_sources(row) for row in inputs):
            with self._batch_scope(GenerationMedia(encode=False, groups=groups)):
                output = super()._generate_and_score_completions(inputs)
            output["group_ids"] = torch.tensor(groups, device=self.accelerator.device)
            return output
        has_video = any(row.get("video") is not None for row in inputs)
        model_type = getattr(self.model.config, "model_type", None)
        if has_video and model_type not in SUPPORTED_VIDEO_MODEL_TYPES:
            raise UnsupportedVideoModelError(self._unsupported_video_message("The batch has video rows"))
        before = Counter(self.media_counts)
        rows = self._load_media(inputs)
        every_row_has_images = all(m.images and m.error is None for m in rows)
        supported = model_type in SUPPORTED_VIDEO_MODEL_TYPES
        trl_path = not has_video and (not supported or (every_row_has_images and not self.use_vllm))
        media = GenerationMedia(
            rows,
            reward_rows=[{**row, "frames": _reward_frames(m)} for row, m in zip(inputs, rows, strict=True)],
            encode=not trl_path,
            groups=groups,
        )
        with self._batch_scope(media):
            if trl_path:
                output = super()._generate_and_score_completions(_with_decoded_images(inputs, rows))
            else:
                output = self._generate_with_media(inputs, media)
        output["group_ids"] = torch.tensor(groups, device=self.accelerator.device)
        skipped = [i for i, flag in enumerate(media.skipped) if flag]
        if skipped:  # no loss on a skipped sample (its rewards are already NaN, so its advantage is 0)
            output["completion_mask"][skipped] = 0
        self._log_media_counts(before)
        return output

    def _generation_groups(self, rows: int) -> list[int]:
        """The global group id of each row of this process's generation batch (`prompt_sharing.generation_groups`:
        trl's sampler repeats each prompt `num_generations` times, `num_generations_eval` when evaluating)."""
        size = self.num_generations if self.model.training else self.num_generations_eval
        return generation_groups(rows, size, self.accelerator.process_index)

    def _generate_with_media(self, inputs: list[dict], media: GenerationMedia):
        """This class's media path: the processor sees the decoded frames and images once per group, and the batch
        carries each row's vision tensors to every log-prob pass."""
        # trl's own image path would run a second, video-blind processor pass: media stays with this class.
        rows = []
        for row, row_media in zip(inputs, media.rows, strict=True):
            prompt = row["prompt"]
            if row_media.images and row_media.error is None and isinstance(prompt, list):
                # trl's image rows may have plain-string prompts: insert the image blocks, as trl does.
                prompt = prepare_multimodal_messages(prompt, images=row_media.images)
            rows.append({**{k: v for k, v in row.items() if k not in ("image", "images", "video")}, "prompt": prompt})
        with self._vision_placeholders_suppressed():
            if self.settings.shaping.temporal_grpo and self.model.training:
                media.shuffled = self._rollout_shuffled(inputs, media)
            output = super()._generate_and_score_completions(rows)
        output["vision_inputs"] = list(media.vision)
        return output

    def _log_media_counts(self, before: Counter) -> None:
        for name in ("video_decodes", "video_reuses", "skipped_samples"):
            local = torch.tensor(float(self.media_counts[name] - before[name]), device=self.accelerator.device)
            log_metric(self, f"media/{name}", self.accelerator.gather(local).sum().item())

    def _tokenize_prompts(self, prompts: list):
        # Adds: the processor sees the frames (with their metadata) and images, once per group; vision tokens are
        # checked. Each prompt is rendered with its own tools (its environment's, as in trl).
        media = self._active_batch("_tokenize_prompts")
        if not media.encode:
            return super()._tokenize_prompts(prompts)
        tools = prompt_tools(self, media.reward_rows)
        encoded: dict[int, tuple[int, list, tuple[list[int], dict, list[int]]]] = {}  # group -> (row, prompt, ids)
        prompt_ids, vision_rows, template_ids = [], [], []
        for index, (prompt, row_media, group) in enumerate(zip(prompts, media.rows, media.groups, strict=True)):
            skipped = row_media.error is not None
            prompt = _strip_media_blocks(prompt) if skipped else prompt
            if group in encoded:
                first, first_prompt, (ids, vision, template) = encoded[group]
                if not _same_prompt(prompt, first_prompt) or tools[index] != tools[first]:
                    raise ValueError(
                        f"Rows {first} and {index} of the generation batch are completions of one prompt (group "
                        f"{group}) but their prompts differ (an environment's reset gave them different "
                        "observations): the media path encodes and computes each group's prompt once, as trl's vLLM "
                        "server mode generates each group from one prompt. Return the same observation for every "
                        "rollout of a row."
                    )
            else:
                ids, vision, template = self._encode_prompt(prompt, row_media, index, tools[index])
                encoded[group] = index, prompt, (ids, vision, template)
            prompt_ids.append(ids)
            vision_rows.append(None if skipped else (vision or None))
            template_ids.append(template)
        media.vision, media.template_ids = vision_rows, template_ids
        return prompt_ids, None, self._generation_fields(prompt_ids, vision_rows)

    def _generation_fields(self, prompt_ids: list[list[int]], vision_rows: list[dict | None]) -> dict:
        """trl's `multimodal_fields` for generation: the collated vision tensors and per-prompt `mm_token_type_ids`."""
        fields = collate_vision(vision_rows)
        fields["mm_token_type_ids"] = [self._mm_token_type_ids(torch.tensor(ids)).tolist() for ids in prompt_ids]
        return fields

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        # Adds: vLLM receives each row's frames (with metadata) and images; transformers generation prefills each
        # group's prompt once. The media travel as `VLLMMedia` through trl's `images` argument, so trl gathers them to
        # the main process (server mode) or across the tensor-parallel group (colocate); `vllm_media.patched` sets up
        # trl's generation object for them.
        media = self._active_batch("_generate_single_turn")
        with self._generation_setup(media, images) as images:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)

    @contextmanager
    def _generation_setup(self, media: GenerationMedia, images) -> Iterator[Any]:
        """What trl's generation runs with for `media`; yields its `images` argument. A batch on trl's own path as it
        is (through the rollout engine when the config sets `generation_engine="compiled"` explicitly); with vLLM,
        each row's media as `VLLMMedia` (`vllm_media.patched`); with the rollout engine (`generation_engine` resolved
        to "compiled"), each group prefilled once into its static cache (`_engine_generation`); with transformers and
        `share_prompt_compute`, each group's prompt prefilled once (`_shared_prefill`)."""
        engine = self.settings.generation_engine == "compiled"
        if not media.encode:
            if engine and self.settings.generation.generation_engine == "compiled":
                with self._engine_generation(None, media.groups):
                    yield images
            else:
                yield images
        elif self.use_vllm:
            with vllm_media.patched(self.vllm_generation, media.rows, self.vision_placeholder_ids, media.template_ids) as payloads:
                yield payloads
        elif engine:
            with self._engine_generation(media.vision, media.groups):
                yield images
        elif self.settings.share_prompt_compute:
            with self._shared_prefill(media.vision, media.groups):
                yield images
        else:
            yield images

    @contextmanager
    def _engine_generation(self, vision_rows: list[dict | None] | None, groups: list[int] | None):
        """trl's transformers generation runs on the rollout engine (`RolloutEngine.generate`, a stand-in for
        `model.generate`): each group's prompt prefilled once into a static KV cache, the decode step compiled on CUDA.

        Args:
            vision_rows: per row, its processor outputs (the media path); None: the engine splits the collated vision
                tensors trl passes (trl's own path).
            groups: each row's group; used when they describe the rows generated (trl's tool-call loop regenerates
                some rows alone: each is then prefilled on its own).
        """
        model = self.accelerator.unwrap_model(self.model_wrapped)  # the object trl's generation unwraps to

        def generate(input_ids, attention_mask=None, generation_config=None, **kwargs):
            if vision_rows is not None:  # the media path: each row's own vision tensors, not the collated ones
                for key in (*VISION_KEYS, "mm_token_type_ids"):
                    kwargs.pop(key, None)
            rows = input_ids.size(0)
            engine = self._engine_for(model)
            with profiling_context(self, "RolloutEngine.generate"):
                sequences = engine.generate(
                    input_ids,
                    attention_mask,
                    generation_config,
                    vision_rows=vision_rows,
                    groups=groups if groups is not None and len(groups) == rows else None,
                    **kwargs,
                )
            stats = engine.last_stats
            if stats.decode_seconds > 0:
                log_metric(self, "rollout/decode_tokens_per_second", stats.new_tokens / stats.decode_seconds)
            return sequences

        with generate_replaced(model, generate):
            yield

    @property
    def rollout_engine(self) -> RolloutEngine | None:
        """The run's rollout engine (`generation_engine` resolved to "compiled"), built at the first generation: its
        `compile_seconds`, `last_stats`, `cache_shapes` and generation `weights`. None before the first generation
        and on every other generation path."""
        return self._engine

    def _engine_for(self, model) -> RolloutEngine:
        """The trainer's rollout engine, built at the first generation on the unwrapped policy (after the precision
        rule has set the trainable weights' dtype), its generation weights refreshed from the policy whenever an
        optimizer step has run since their last refresh (`state.global_step` moved: in training, and after a resume).

        The compute dtype is the mixed precision's (bf16 / fp16), else the model's own; the decode step is compiled
        on CUDA only (elsewhere the engine runs it eagerly: static cache and shared prefill, no compile time)."""
        step = self.state.global_step
        if self._engine is None:
            dtype = torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else None
            device = next(model.parameters()).device
            self._engine = RolloutEngine(
                model,
                dtype=dtype,
                merge_lora=self.settings.generation.generation_merge_lora,
                compile=device.type == "cuda",
            )
            logger.info(
                "Rollouts run on the rollout engine (%s weights, %s, %.1f MB of generation copies)",
                self._engine.weights.mode,
                "compiled" if self._engine.compile else "eager",
                self._engine.weights.nbytes() / 2**20,
            )
        elif self._engine_step != step:
            self._engine.refresh()
        self._engine_step = step
        return self._engine

    @contextmanager
    def _shared_prefill(self, vision_rows: list[dict | None], groups: list[int]):
        """trl's transformers generation prefills each group's prompt (and its media) once and continues its rows from
        the expanded KV cache (`generate_with_shared_prefill`); the vision tensors come per row, not collated."""
        model = self.accelerator.unwrap_model(self.model_wrapped)  # the object trl's generation unwraps to

        def generate(input_ids, attention_mask, **kwargs):
            for key in (*VISION_KEYS, "mm_token_type_ids"):
                kwargs.pop(key, None)
            with profiling_context(self, "generate_with_shared_prefill"):
                return generate_with_shared_prefill(model, input_ids, attention_mask, vision_rows, groups=groups, **kwargs)

        with generate_replaced(model, generate):
            yield

    def _mm_token_type_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return mm_token_type_ids(input_ids, self.image_token_id, self.video_token_id)

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, **kwargs):
        # Adds: each row's own vision tensors, and each group's prompt with its media computed once (prompt sharing);
        # MoE aux losses keep per-row chunks through trl's own loop. A batch of this class's media path was generated
        # with the vision placeholders suppressed, so its every pass scores that distribution (`biased_log_probs`):
        # the same log-probs as vLLM reports for its samples.
        media = self._active_batch("_get_per_token_logps_and_entropies")
        if media.vision is None:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size, **kwargs
            )
        with biased_log_probs(self.vision_placeholder_ids):
            return self._media_logps(model, input_ids, attention_mask, logits_to_keep, media, batch_size, **kwargs)

    def _media_logps(self, model, input_ids, attention_mask, logits_to_keep, media, batch_size, **kwargs):
        rows = media.vision
        if all(row is None for row in rows):  # text and skipped rows only
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size, **kwargs
            )
        if len(rows) != input_ids.size(0):
            raise RuntimeError(f"{len(rows)} vision rows for a batch of {input_ids.size(0)} sequences.")
        if not kwargs.get("compute_aux_loss"):  # MoE load-balancing losses need the per-row passes below
            # Each group's prompt and its media once, its completions attending to it (per row when sharing is off
            # or cannot apply); the same log-probs, entropies and gradients as the per-row passes.
            with self.accelerator.autocast(), profiling_context(self, "shared_prompt_logps"):
                result = shared_prompt_logps(
                    model,
                    input_ids,
                    attention_mask,
                    logits_to_keep,
                    rows,
                    groups=media.groups,
                    batch_size=batch_size,
                    compute_entropy=kwargs.get("compute_entropy", False),
                    share=self.settings.share_prompt_compute,
                )
            self._log_sharing(result.stats)
            return result.logps, result.entropies, None
        batch_size = batch_size or input_ids.size(0)
        logps, entropies, aux_losses = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            extra = {k: v.to(input_ids.device) for k, v in collate_vision(rows[start:end]).items()}
            extra["mm_token_type_ids"] = self._mm_token_type_ids(input_ids[start:end])
            chunk_logps, chunk_entropies, chunk_aux = super()._get_per_token_logps_and_entropies(
                _ModelWithInputs(model, extra),
                input_ids[start:end],
                attention_mask[start:end],
                logits_to_keep,
                batch_size=end - start,
                **kwargs,
            )
            logps.append(chunk_logps)
            entropies.append(chunk_entropies)
            aux_losses.append(chunk_aux)
        entropies = torch.cat(entropies, dim=0) if entropies[0] is not None else None
        aux = torch.stack(aux_losses).mean() if aux_losses[0] is not None else None
        return torch.cat(logps, dim=0), entropies, aux

    def _log_sharing(self, stats) -> None:
        log_metric(self, "prompt_sharing/shared", float(stats.shared))
        log_metric(self, "prompt_sharing/lm_token_ratio", stats.unshared_lm_tokens / max(stats.lm_tokens, 1))
        if stats.vision_patches:
            log_metric(self, "prompt_sharing/vision_patch_ratio", stats.unshared_vision_patches / stats.vision_patches)

    def _prepare_inputs(self, generation_batch):
        # Adds: when the micro-batches of a generation batch all go into one optimizer step and the loss does not depend
        # on how rows are split between them, the row shuffle keeps each group together, so that prompt sharing computes
        # a prompt once per pass rather than once in each micro-batch it was split into. The update is the same (the
        # same rows' gradients summed), and so is the random draw.
        if not self.keeps_groups_together:
            return super()._prepare_inputs(generation_batch)
        with row_shuffle(_shuffle_keeping_groups):
            return super()._prepare_inputs(generation_batch)

    @property
    def keeps_groups_together(self) -> bool:
        """Whether trl's row shuffle keeps each group's rows in one micro-batch: with prompt sharing, when a
        generation batch's micro-batches make one optimizer step and the loss does not depend on how its rows are
        split (`SPLIT_INVARIANT_LOSSES`)."""
        args = self.args
        return (  # (evaluation batches are neither shuffled nor split)
            self.settings.share_prompt_compute
            and args.steps_per_generation == args.gradient_accumulation_steps > 1
            and self.loss_type in SPLIT_INVARIANT_LOSSES
        )

    def _compute_loss(self, model, inputs):
        # Adds: the micro-batch's vision tensors and groups reach the policy forward.
        with self._batch_scope(GenerationMedia(vision=inputs.get("vision_inputs"), groups=_as_list(inputs.get("group_ids")))):
            return super()._compute_loss(model, inputs)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # Adds: the dataset's own media columns and `frames` reach reward functions; group shaping after the gather.
        media = self._active_batch("_calculate_rewards")
        if media.reward_rows is not None:
            inputs = media.reward_rows
        else:
            inputs = [{**row, "frames": None} for row in inputs]
        skipped_local = torch.tensor(
            media.skipped or [False] * len(prompts), dtype=torch.bool, device=self.accelerator.device
        )
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        skipped = self.accelerator.gather(skipped_local)
        if self.model.training and self.settings.video.on_bad_sample == "skip":
            # Every process holds the same gathered flags, so all of them stop here together.
            self.skip_tally.add(len(skipped), {"bad_media": int(skipped.sum())}, step=self.state.global_step + 1)
        rewards[skipped] = torch.nan
        return self.shape_rewards(rewards, completion_ids_list, media)

    # ------------------------------------------------------------------------------------------ shaping
    def shape_rewards(self, rewards: torch.Tensor, completion_ids_list, media: GenerationMedia) -> torch.Tensor:
        """Adds the group-level bonuses (`videorft_hf.rewards.shaping`) to the accuracy reward's column of the rewards
        gathered from every process, and logs each as `shaping/<field>` (its mean over the scorable completions).

        Args:
            rewards: `(rows of every process, reward functions)`, gathered in process order (trl's layout).
            completion_ids_list: this process's completions, for their lengths.
            media: this process's batch: its rows' `groups` (gathered here) and T-GRPO's `shuffled` counts.

        Returns:
            `rewards`, shaped in place.
        """
        shaping = self.settings.shaping
        if not (shaping.length_bonus or shaping.temporal_grpo):
            return rewards
        groups = self.accelerator.gather(torch.tensor(media.groups, device=rewards.device))
        accuracy_column = self.reward_func_names.index(shaping.accuracy_reward_name)
        accuracy = rewards[:, accuracy_column]
        scorable = ~torch.isnan(rewards).all(dim=1)
        bonuses = {}
        if shaping.length_bonus:
            lengths = torch.tensor([len(ids) for ids in completion_ids_list], device=rewards.device)
            bonuses["length_bonus"] = group_length_bonus(
                correct_completions(accuracy, shaping.length_bonus_accuracy_threshold),
                self.accelerator.gather(lengths),
                groups,
                shaping.length_bonus_min_tokens,
                shaping.length_bonus_max_tokens,
                shaping.length_bonus_value,
            )
        if shaping.temporal_grpo:
            correct = correct_completions(accuracy, shaping.temporal_accuracy_threshold)
            bonuses["temporal_bonus"] = self._temporal_bonus(correct, groups, media.shuffled)
        for name, bonus in bonuses.items():
            # Only correct completions earn a bonus, so an unscored (NaN) accuracy stays NaN.
            rewards[:, accuracy_column] += bonus
            log_metric(self, f"shaping/{name}", bonus[scorable].mean().item())
        return rewards

    @profiling_decorator
    def _rollout_shuffled(self, inputs: list[dict], media: GenerationMedia) -> torch.Tensor:
        """T-GRPO: rolls out `num_generations // 2` completions per group on frame-shuffled video (never trained on)
        and scores them with the accuracy reward, through trl's own reward call (synchronous and asynchronous reward
        functions alike). Returns per local row `(correct, rolled out)`, credited to the first row of each group here,
        so that the sums over a group are right after the gather."""
        device = self.accelerator.device
        counts = torch.zeros(len(inputs), 2, device=device)
        members: dict[int, list[int]] = {}
        for index, (row_media, group) in enumerate(zip(media.rows, media.groups, strict=True)):
            if row_media.videos and row_media.error is None:
                members.setdefault(group, []).append(index)
        if not members:
            return counts
        tools = prompt_tools(self, inputs)
        generator = torch.Generator().manual_seed(self.args.seed + self.state.global_step)
        prompt_ids, vision_rows, template_ids, owners, shuffled_media, groups = [], [], [], [], [], []
        for group, rows in members.items():
            first = rows[0]
            frames, metadata = media.rows[first].videos[0]
            order = torch.randperm(len(frames), generator=generator).numpy()
            shuffled = RowMedia(key=("shuffled",), videos=[(frames[order], metadata)])
            ids, vision, template = self._encode_prompt(inputs[first]["prompt"], shuffled, first, tools[first])
            copies = max(1, round(len(rows) * (self.num_generations // 2) / self.num_generations))
            prompt_ids += [ids] * copies
            vision_rows += [vision] * copies
            template_ids += [template] * copies
            shuffled_media += [shuffled] * copies
            owners += [first] * copies
            groups += [group] * copies
        fields = self._generation_fields(prompt_ids, vision_rows)
        rollouts = GenerationMedia(shuffled_media, vision=vision_rows, template_ids=template_ids, groups=groups)
        with self._batch_scope(rollouts):
            completion_ids, _ = self._generate_single_turn(prompt_ids, None, fields, num_generations=1)
        texts = self.processing_class.batch_decode(completion_ids, skip_special_tokens=True)
        accuracy = self.reward_func_names.index(self.settings.shaping.accuracy_reward_name)
        scores = call_reward_functions(
            self,
            [accuracy],
            [{key: value for key, value in inputs[i].items() if key != "prompt"} for i in owners],
            [inputs[i]["prompt"] for i in owners],
            [[{"role": "assistant", "content": text}] for text in texts],
            completion_ids,
        )[:, 0]
        scores = [None if torch.isnan(score) else float(score) for score in scores]
        threshold = self.settings.shaping.temporal_accuracy_threshold
        return shuffled_correct_counts(scores, owners, len(inputs), threshold, device)

    def _temporal_bonus(self, correct: torch.Tensor, groups: torch.Tensor, shuffled: torch.Tensor | None) -> torch.Tensor:
        """T-GRPO's bonus per completion from this batch's shuffled rollouts (`_rollout_shuffled`), gathered."""
        local = shuffled
        if local is None:
            local = torch.zeros(correct.numel() // self.accelerator.num_processes, 2, device=correct.device)
        shaping = self.settings.shaping
        bonus, shuffled_accuracy = group_temporal_bonus(
            correct, self.accelerator.gather(local), groups, shaping.temporal_ratio, shaping.temporal_bonus
        )
        if not torch.isnan(shuffled_accuracy).all():
            log_metric(self, "temporal/shuffled_accuracy", shuffled_accuracy.nanmean().item())
        return bonus


set_hub_tags(VideoGRPOTrainer, videorft_tags("grpo"))  # what trl's model cards and push_to_hub add

__all__ = ["GenerationMedia", "VideoGRPOTrainer"]
