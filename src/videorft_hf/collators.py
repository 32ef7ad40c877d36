"""SFT collator for video, image and text rows: decode media, run the processor, pad, mask labels.

`DataCollatorForVideoLanguageModeling` takes the prompt-completion rows of `videorft_hf.data` (any mix of video, image
and text-only rows in one batch) and builds each prompt through `videorft_hf.processing`, the path the GRPO trainer
and evaluation take: media decoded with the run's `VideoSamplingConfig`, frames passed with their `VideoMetadata` to
the model's processor (so `second_per_grid_ts` and Qwen3-VL timestamps come from the true fps). This module adds what
SFT needs around it: the completion's tokens and labels (-100 everywhere except the assistant's response tokens and
its end-of-turn token, `<|im_end|>`), right padding, and skipping bad samples.

Each sample is encoded as inference sees it: the processor runs on the prompt rendered with the generation prompt
(`...<|im_start|>assistant\\n`), the completion is the rest of the rendered conversation, tokenized on its own; the
labels are the completion's tokens up to and including its last end-of-turn token (the template's trailing newline
is not trained on).

Nothing is truncated: a sample longer than `max_length` would lose vision tokens or its answer. Such a sample, and
one whose media is missing or corrupt, raises a typed error naming it (`on_bad_sample="raise"`), or is dropped from
its batch, logged to the `videorft_hf.collators` logger and counted (`on_bad_sample="skip"`); it is never replaced by
another sample. A batch whose samples are all skipped becomes a one-row batch without any label (loss 0, one tiny
dummy image so the vision tower runs as on every other step), so that every process of a distributed run still takes
the step together.

The collator is picklable, so decoding runs in `DataLoader` worker processes (`dataloader_num_workers > 0`); skip
counts made in workers are visible from the main process through a small shared-memory tensor. With `report_skips`
(which `videorft_hf.sft_trainer.VideoSFTTrainer` turns on) each batch also carries what its collation skipped, under
`SKIPS_KEY` (a `videorft_hf.skips.BatchSkips`), so that the trainer counts the skips of the batches it trains on and
stops a run whose skips exceed its bounds; the trainer removes it before the forward pass.

Example:
    ```python
    from trl import SFTTrainer
    from videorft_hf import DataCollatorForVideoLanguageModeling, load_videorft_dataset
    from videorft_hf.configs import VideoSFTConfig

    args = VideoSFTConfig(output_dir="out", max_length=4096, remove_unused_columns=False, dataloader_num_workers=4)
    collator = DataCollatorForVideoLanguageModeling.from_config(processor, args)
    dataset = load_videorft_dataset("VideoRFT-CoT-102K.jsonl", media_root="/data/videorft")
    trainer = SFTTrainer(model, args=args, train_dataset=dataset, processing_class=processor, data_collator=collator)
    ```
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from .frame_store import open_frame_store
from .processing import (
    RowMedia,
    VisionTokenMismatchError,
    collate_vision,
    encode_prompt,
    load_row_media,
    media_sources,
    mm_token_type_ids,
    model_sampling_config,
    render_prompt,
)
from .skips import SKIP_REASONS, SKIPS_KEY, BatchSkips  # why a sample was skipped: the skip counters' columns
from .video import FrameCache, MediaDecodeError, VideoSamplingConfig

logger = logging.getLogger(__name__)

# Skip counters: one row per process (main process = row 0, DataLoader worker i = row i + 1), so that no two
# processes ever write the same element (workers past the last row share it, and two skips at once could lose one).
_COUNTER_ROWS = 65


class SampleTooLongError(ValueError):
    """A sample has more tokens than `max_length`. Cutting it would drop vision tokens or the answer, so it is not.

    Attributes:
        sample: names the sample (problem_id, media path, position in its batch).
        length: its token count, vision tokens included.
        max_length: the limit.
        vision_tokens: how many of its tokens are image or video placeholders.
    """

    def __init__(self, sample: str, length: int, max_length: int, vision_tokens: int = 0):
        self.sample, self.length, self.max_length, self.vision_tokens = sample, length, max_length, vision_tokens
        super().__init__(
            f"Sample {sample} has {length} tokens ({vision_tokens} of them vision tokens), more than max_length="
            f"{max_length}. Raise max_length, sample fewer frames or pixels (video_max_frames, video_max_pixels), or "
            "set on_bad_sample='skip' to skip such samples."
        )

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (self.__class__, (self.sample, self.length, self.max_length, self.vision_tokens))


def _sample_name(example: dict, index: int) -> str:
    parts = [f"problem_id={example['problem_id']!r}"] if example.get("problem_id") is not None else []
    first: dict[str, Any] = {}
    for kind, source in media_sources({"video": example.get("video"), "image": example.get("image")}):
        first.setdefault(kind, source)
    for kind, source in first.items():
        if isinstance(source, (str, os.PathLike)):
            parts.append(f"{kind} {os.fspath(source)}")
    parts.append(f"position {index} of its batch")
    return ", ".join(parts)


@dataclass(eq=False)
class DataCollatorForVideoLanguageModeling:
    """Collates conversational prompt-completion rows with video, image or no media into a padded model batch.

    Args:
        processor: the model's processor (`Qwen2VLProcessor`, `Qwen2_5_VLProcessor`, `Qwen3VLProcessor`, ...).
        sampling_config: how videos and images are sampled and resized; its `patch_factor` is set from the
            processor (28 for Qwen2/2.5-VL, 32 for Qwen3-VL). Defaults to the "videorft-train" preset.
        max_length: most tokens per sample, vision tokens included; longer samples are never cut (see
            `on_bad_sample`). None: no limit.
        on_bad_sample: "raise" a typed error naming the sample (`MediaDecodeError` subclasses for missing or corrupt
            media, `SampleTooLongError`), or "skip" it: it is dropped from its batch, logged and counted.
        video_backend: "auto", "decord", "pyav" or "torchcodec".
        frame_cache_bytes: keep decoded frames in memory (per process) up to this many bytes; 0 turns it off.
        frame_store: a `videorft_hf.frame_store.FrameStore` (or the folder of one) of prepared frames, read before
            decoding; None decodes every video.
        pad_to_multiple_of: pad the sequence length of each batch to a multiple of this.
        end_of_turn_token: the token that ends the assistant's turn, trained on; default `<|im_end|>` when the
            tokenizer has it, else its EOS token.
        report_skips: also put what the batch's collation skipped under `SKIPS_KEY` (not a model input: a trainer
            must remove it, as `VideoSFTTrainer` does, which turns this on).

    Returns (when called on a list of rows):
        A dict of tensors: `input_ids`, `attention_mask`, `labels`, `mm_token_type_ids` (each `(batch, length)`),
        and whichever of `pixel_values`, `image_grid_thw`, `pixel_values_videos`, `video_grid_thw`,
        `second_per_grid_ts` the batch's media produce; with `report_skips`, a `BatchSkips` under `SKIPS_KEY`.

    Raises (when called):
        MediaDecodeError: (a subclass naming the cause) missing or corrupt media, with `on_bad_sample="raise"`.
        SampleTooLongError: a sample above `max_length`, with `on_bad_sample="raise"`.
        VisionTokenMismatchError: a row's `{"type": "video"}` / `{"type": "image"}` blocks do not match its media
            columns (always raised: it is a dataset bug, not a bad file).
        KeyError: a row without `prompt` and `completion`, or a video placeholder but no `video` column (trl drops
            unknown columns unless `remove_unused_columns=False`).

    Example:
        >>> from videorft_hf.testing import build_tiny_processor
        >>> collator = DataCollatorForVideoLanguageModeling(build_tiny_processor("qwen2_5_vl"))
        >>> row = {"prompt": [{"role": "user", "content": [{"type": "text", "text": "2+2?"}]}],
        ...        "completion": [{"role": "assistant", "content": [{"type": "text", "text": "4"}]}]}
        >>> batch = collator([row])
        >>> collator.processor.tokenizer.decode(batch["labels"][0][batch["labels"][0] != -100])
        '4<|im_end|>'
    """

    processor: Any
    sampling_config: VideoSamplingConfig | None = None
    max_length: int | None = None
    on_bad_sample: str = "raise"
    video_backend: str = "auto"
    frame_cache_bytes: int = 0
    frame_store: Any = None
    pad_to_multiple_of: int | None = None
    end_of_turn_token: str | None = None
    report_skips: bool = False
    _skip_counts: torch.Tensor = field(init=False, repr=False, compare=False)
    _cache: FrameCache | None = field(init=False, default=None, repr=False, compare=False)
    _batch_skips: list = field(init=False, default_factory=list, repr=False, compare=False)

    def __post_init__(self):
        if self.on_bad_sample not in ("raise", "skip"):
            raise ValueError(f"on_bad_sample must be 'raise' or 'skip', got {self.on_bad_sample!r}.")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be positive or None, got {self.max_length}.")
        if self.frame_cache_bytes < 0:
            raise ValueError(f"frame_cache_bytes must be >= 0, got {self.frame_cache_bytes}.")
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is None:
            raise TypeError(
                f"{type(self.processor).__name__} has no tokenizer: pass the model's processor (AutoProcessor)."
            )
        config = self.sampling_config or VideoSamplingConfig.from_preset("videorft-train")
        # The collator knows the processor, not the model: a Qwen-VL style processor sets the patch factor.
        self.sampling_config = model_sampling_config(config, None, self.processor)
        self.frame_store = open_frame_store(self.frame_store)
        token = self.end_of_turn_token
        if token is None:
            token = "<|im_end|>" if "<|im_end|>" in tokenizer.get_vocab() else tokenizer.eos_token
        self.end_of_turn_token = token
        self.end_of_turn_id = tokenizer.convert_tokens_to_ids(token) if token is not None else None
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("The tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token.")
        self.pad_token_id = pad
        self._skip_counts = torch.zeros(_COUNTER_ROWS, len(SKIP_REASONS), dtype=torch.int64).share_memory_()

    @classmethod
    def from_config(cls, processor, args, **overrides) -> DataCollatorForVideoLanguageModeling:
        """Builds the collator from a `VideoSFTConfig`: its settings (`videorft_hf.settings.RunSettings`, the
        sampling with the processor's patch factor, decoder, frame cache and store, `on_bad_sample`), `max_length` and
        `pad_to_multiple_of`.

        Args:
            processor: the model's processor.
            args: a `VideoSFTConfig` (any object with the `VideoSamplingArguments` fields and `max_length`).
            overrides: collator arguments that take precedence.

        Returns:
            The collator.

        Example:
            >>> args = VideoSFTConfig(output_dir="out", max_length=4096, report_to=[])  # doctest: +SKIP
            >>> collator = DataCollatorForVideoLanguageModeling.from_config(processor, args)  # doctest: +SKIP
        """
        from .settings import RunSettings

        settings = RunSettings.resolve(args, processor=processor)
        kwargs = dict(
            sampling_config=settings.sampling,
            max_length=args.max_length,
            on_bad_sample=settings.video.on_bad_sample,
            video_backend=settings.video.video_backend,
            frame_cache_bytes=settings.video.frame_cache_bytes,
            frame_store=settings.video.frame_store,
            pad_to_multiple_of=getattr(args, "pad_to_multiple_of", None),
        )
        kwargs.update(overrides)
        return cls(processor, **kwargs)

    # ------------------------------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = None  # holds a lock; each process builds its own
        return state

    # ------------------------------------------------------------------------------------------ skip counters
    @property
    def skipped_samples(self) -> dict[str, int]:
        """Samples skipped so far by this collator, in this process and its DataLoader workers, by reason."""
        totals = self._skip_counts.sum(dim=0).tolist()
        return dict(zip(SKIP_REASONS, totals, strict=True))

    @property
    def num_skipped(self) -> int:
        """Total samples skipped so far (see `skipped_samples`)."""
        return int(self._skip_counts.sum())

    def _skip(self, reason: str, sample: str, error: Exception) -> None:
        info = torch.utils.data.get_worker_info()
        row = 0 if info is None else min(info.id + 1, _COUNTER_ROWS - 1)
        self._skip_counts[row, SKIP_REASONS.index(reason)] += 1
        if self.report_skips:
            self._batch_skips.append((reason, f"sample {sample}: {error}"))
        logger.warning(
            "Skipping sample %s (on_bad_sample='skip'): %s [%d skipped so far: %s]",
            sample,
            error,
            self.num_skipped,
            ", ".join(f"{k}={v}" for k, v in self.skipped_samples.items()),
        )

    # ------------------------------------------------------------------------------------------ collation
    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        self._batch_skips = []
        encoded = []
        for index, example in enumerate(examples):
            sample = self.encode(example, index)
            if sample is not None:
                encoded.append(sample)
        if not encoded:
            encoded = [self._empty_sample()]
        batch = self._pad(encoded)
        if self.report_skips:
            batch[SKIPS_KEY] = BatchSkips.of(len(examples), self._batch_skips)
        return batch

    def encode(self, example: dict[str, Any], index: int = 0) -> dict[str, Any] | None:
        """Encodes one row: decode media, run the processor on the prompt, tokenize the completion, build labels.

        Args:
            example: a row with `prompt` and `completion` message lists, and `video` / `image` / `images` media
                (paths, or in-memory images) for the prompt's `{"type": "video"}` / `{"type": "image"}` blocks.
            index: the row's position in its batch, for messages.

        Returns:
            A dict with lists `input_ids`, `labels`, `mm_token_type_ids` and the row's vision tensors, or None when
            the row is skipped (`on_bad_sample="skip"`).

        Raises:
            See the class docstring.
        """
        name = _sample_name(example, index)
        _check_row(example, name)
        prompt_text, completion_text = self._split_conversation(example["prompt"], example["completion"], name)
        media = self._load_media(example, name)
        if media is None:
            return None
        prompt_ids, vision = encode_prompt(self.processor, prompt_text, media.videos, media.images, f"Sample {name}")
        prompt_types = self._token_types(prompt_ids)
        completion_ids = self.processor.tokenizer(completion_text, add_special_tokens=False)["input_ids"]
        if not self._fits(prompt_ids, completion_ids, prompt_types, name):
            return None
        return {
            "input_ids": prompt_ids + completion_ids,
            "labels": [-100] * len(prompt_ids) + self._completion_labels(completion_ids),
            "mm_token_type_ids": prompt_types + [0] * len(completion_ids),
            "vision": vision,
        }

    def _split_conversation(self, prompt: list[dict], completion: list[dict], name: str) -> tuple[str, str]:
        """The prompt as inference renders it (with the generation prompt) and the rest of the conversation.

        Raises:
            ValueError: the template's rendered prompt does not begin the rendered conversation.
        """
        prompt_text = render_prompt(self.processor, prompt)
        full_text = self.processor.apply_chat_template(prompt + completion, tokenize=False)
        if not full_text.startswith(prompt_text):
            raise ValueError(
                f"Sample {name}: the chat template renders the prompt with its generation prompt as a text that does "
                "not begin the rendered conversation, so the response cannot be located. Use a template whose "
                "`add_generation_prompt` output is a prefix of the conversation (the Qwen-VL templates are)."
            )
        return prompt_text, full_text[len(prompt_text) :]

    def _load_media(self, example: dict[str, Any], name: str) -> RowMedia | None:
        """The row's decoded media, or None when a bad file makes it skipped (`on_bad_sample="skip"`).

        Raises:
            MediaDecodeError: (the subclass naming the cause) with the sample's name, with `on_bad_sample="raise"`.
        """
        try:
            return load_row_media(
                example, self.sampling_config, backend=self.video_backend, cache=self._frame_cache(), store=self.frame_store
            )
        except MediaDecodeError as error:
            if self.on_bad_sample == "skip":
                self._skip("bad_media", name, error)
                return None
            detail = str(error).removeprefix(f"{error.path}: ")  # the cause and its hint
            raise type(error)(
                error.path, f"{detail} [sample {name}; set on_bad_sample='skip' to skip such samples]"
            ) from error

    def _token_types(self, ids: list[int]) -> list[int]:
        """The prompt's `mm_token_type_ids` as the processor marks them (1 image, 2 video tokens; 0 when the processor
        returns none)."""
        processor = self.processor
        if not getattr(processor, "return_mm_token_type_ids", False):
            return [0] * len(ids)
        image_id, video_id = getattr(processor, "image_token_id", None), getattr(processor, "video_token_id", None)
        return mm_token_type_ids(torch.tensor(ids), image_id, video_id).tolist()

    def _fits(self, prompt_ids: list[int], completion_ids: list[int], prompt_types: list[int], name: str) -> bool:
        """Whether the sample is within `max_length`; False when it is not and is skipped.

        Raises:
            SampleTooLongError: with `on_bad_sample="raise"`.
        """
        length = len(prompt_ids) + len(completion_ids)
        if self.max_length is None or length <= self.max_length:
            return True
        vision_tokens = sum(1 for t in prompt_types if t != 0)
        error = SampleTooLongError(name, length, self.max_length, vision_tokens)
        if self.on_bad_sample == "skip":
            self._skip("too_long", name, error)
            return False
        raise error

    def _completion_labels(self, completion_ids: list[int]) -> list[int]:
        """The completion's tokens up to and including its last end-of-turn token; -100 after it."""
        trained = len(completion_ids)
        if self.end_of_turn_id is not None and self.end_of_turn_id in completion_ids:
            trained = len(completion_ids) - completion_ids[::-1].index(self.end_of_turn_id)
        return completion_ids[:trained] + [-100] * (len(completion_ids) - trained)

    def _frame_cache(self) -> FrameCache | None:
        if self.frame_cache_bytes and self._cache is None:
            self._cache = FrameCache(self.frame_cache_bytes)
        return self._cache

    def _empty_sample(self) -> dict[str, Any]:
        """A row without labels standing in for a batch whose samples were all skipped (loss 0).

        It holds one smallest image, so that the vision tower runs on every step of every process, as distributed
        runs that gather or reduce its parameters need.
        """
        from PIL import Image

        side = self.sampling_config.patch_factor
        height, width = self.sampling_config.image_size(side, side)
        messages = [{"role": "user", "content": [{"type": "image"}]}]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        try:
            ids, vision = encode_prompt(self.processor, text, images=[Image.new("RGB", (width, height))])
        except (TypeError, ValueError):  # a processor without images: text only
            ids, vision = encode_prompt(self.processor, text)
        return {
            "input_ids": ids,
            "labels": [-100] * len(ids),
            "mm_token_type_ids": self._token_types(ids),
            "vision": vision,
        }

    def _pad(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(sample["input_ids"]) for sample in samples)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch_size = len(samples)
        input_ids = torch.full((batch_size, length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
        labels = torch.full((batch_size, length), -100, dtype=torch.long)
        token_types = torch.zeros((batch_size, length), dtype=torch.long)
        for row, sample in enumerate(samples):
            n = len(sample["input_ids"])
            input_ids[row, :n] = torch.tensor(sample["input_ids"], dtype=torch.long)
            attention_mask[row, :n] = 1
            labels[row, :n] = torch.tensor(sample["labels"], dtype=torch.long)
            token_types[row, :n] = torch.tensor(sample["mm_token_type_ids"], dtype=torch.long)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "mm_token_type_ids": token_types,
        }
        batch.update(collate_vision([sample["vision"] for sample in samples]))
        return batch


def _count_blocks(messages: list[dict], kind: str) -> int:
    count = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            count += sum(1 for block in content if isinstance(block, dict) and block.get("type") == kind)
    return count


def _check_row(example: dict[str, Any], name: str) -> None:
    """Checks that the row is a prompt-completion conversation whose media columns match its media blocks.

    Raises:
        KeyError: no `prompt` / `completion` message lists, or a media block without its column.
        VisionTokenMismatchError: media blocks and media differ in number (a dataset bug: never skipped).
    """
    if not isinstance(example.get("prompt"), list) or not isinstance(example.get("completion"), list):
        raise KeyError(
            "Each row needs conversational `prompt` and `completion` message lists (as "
            f"videorft_hf.make_conversation builds them); got keys {sorted(example)}."
        )
    sources = media_sources(example)
    for kind, columns in (("video", ("video",)), ("image", ("image", "images"))):
        blocks = _count_blocks(example["prompt"], kind)
        media = sum(1 for k, _ in sources if k == kind)
        column = " / ".join(f"`{c}`" for c in columns)
        if blocks and not any(c in example for c in columns):
            raise KeyError(
                f"Sample {name} has a {{'type': '{kind}'}} block but no {column} column. trl's SFTTrainer drops "
                "columns it does not know unless `remove_unused_columns=False`; set it in the SFT config."
            )
        if blocks != media:
            raise VisionTokenMismatchError(
                f"Sample {name} has {blocks} {{'type': '{kind}'}} block(s) in its prompt but {media} "
                f"{kind}(s) in {column}. Each {kind} needs exactly one block and one entry."
            )


__all__ = ["DataCollatorForVideoLanguageModeling", "SampleTooLongError", "SKIP_REASONS", "SKIPS_KEY"]
