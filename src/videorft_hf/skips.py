"""Skipped samples (`on_bad_sample="skip"`): why a sample is skipped, the bounds a run keeps, the run's count.

A skipped sample is left out of training, never replaced. Skipping is a choice for a few bad files, not a way to
train on nothing, so a run with skips stops with a `SkippedSamplesError`

- at a step in which every sample was skipped (over all processes), before that step updates the weights;
- as soon as the samples skipped exceed `max_skipped_fraction` of the samples the run trains on (its
  `max_steps` times the global batch: `per_device_train_batch_size * gradient_accumulation_steps * processes`,
  divided by GRPO's `num_iterations`, which reuses each generation batch).

`SkipTally` keeps the counts over all processes, by reason. It is a `TrainerCallback` whose state is saved in every
checkpoint (`trainer_state.json`) and restored on resume, and the run record (`videorft_run.json`) and the model card
state its counts. `VideoGRPOTrainer` feeds it with each generation batch's skipped rows (a GRPO sample is a row: one
completion of a prompt); `videorft_hf.sft_trainer.VideoSFTTrainer` with the `BatchSkips` each SFT batch carries.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_SKIPPED_FRACTION", "SKIPS_KEY", "SKIP_REASONS", "BatchSkips", "SkipTally", "SkippedSamplesError"
]

# Why a sample was skipped, in a fixed order (the SFT collator's counter columns).
SKIP_REASONS = ("bad_media", "too_long")
# What to fix, per reason.
SKIP_FIXES = {
    "bad_media": "check the media files and media_root (the folder the records' `./` paths are relative to)",
    "too_long": "raise max_length, or sample fewer or smaller frames (video_max_frames, video_max_pixels)",
}
DEFAULT_MAX_SKIPPED_FRACTION = 0.05
# The batch key under which the SFT collator reports a batch's skips (`report_skips`); not a model input.
SKIPS_KEY = "videorft_skips"
# Skip messages kept for errors.
_FIRST_KEPT = 2


class SkippedSamplesError(ValueError):
    """Too many samples were skipped (`on_bad_sample="skip"`): every sample of a step, or more than
    `max_skipped_fraction` of the run's samples."""


@dataclass
class BatchSkips:
    """What the collation of one batch skipped: the samples it was given, those skipped by reason, the first
    messages. Travels in the batch (`SKIPS_KEY`), so that it is counted when the batch is trained on, not when a data
    loader prepares it ahead.

    Example:
        >>> BatchSkips.of(2, [("bad_media", "sample 0: clip.mp4: file not found")]).skipped
        {'bad_media': 1}
    """

    samples: int
    skipped: dict[str, int] = field(default_factory=dict)
    first: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, samples: int, skips: Iterable[tuple[str, str]]) -> BatchSkips:
        """From the batch's sample count and its `(reason, message)` skips."""
        skips = list(skips)
        return cls(samples, dict(Counter(reason for reason, _ in skips)), [message for _, message in skips[:_FIRST_KEPT]])


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{reason}={n}" for reason, n in counts.items() if n) or "none"


class SkipTally(TrainerCallback, ExportableState):
    """The samples a training run skipped, over all its processes, by reason, and the bounds they must stay within.

    The trainer calls `add` once per step (SFT) or generation batch (GRPO) with counts already summed over
    processes, so that every process holds the same totals and raises at the same point.

    Args:
        max_fraction: the share of the run's samples that may be skipped (`max_skipped_fraction`).
        samples: samples seen so far (restored from a checkpoint).
        skipped: samples skipped so far, by reason (restored from a checkpoint).

    Example:
        >>> tally = SkipTally(max_fraction=0.5)
        >>> tally.planned = 8
        >>> tally.add(4, {"bad_media": 1}, step=1)
        >>> tally.summary()
        {'samples': 4, 'skipped': 1, 'by_reason': {'bad_media': 1}}
    """

    def __init__(self, max_fraction: float = DEFAULT_MAX_SKIPPED_FRACTION, samples: int = 0, skipped=None):
        self.max_fraction = max_fraction
        self.samples = samples
        self.skipped: Counter = Counter(skipped or {})
        self.first: list[str] = []
        self.planned: int | None = None  # samples the run trains on, set at the start of training

    @property
    def total(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> dict:
        """The counts for the run record: samples seen, skipped, and skipped by reason."""
        return {"samples": self.samples, "skipped": self.total, "by_reason": {k: v for k, v in self.skipped.items() if v}}

    def note(self, messages: Iterable[str]) -> None:
        """Keeps the first few skip messages of this process (each once), for errors."""
        for message in messages:
            if len(self.first) < _FIRST_KEPT and message not in self.first:
                self.first.append(message)

    def add(self, samples: int, skipped: Mapping[str, int], step: int, all_skipped: bool | None = None) -> None:
        """Counts a step's (or generation batch's) samples and skips, summed over processes, and checks the bounds.

        Args:
            samples: samples the step held.
            skipped: of those, skipped, by reason.
            step: the optimizer step they are for (1-based), for the message.
            all_skipped: whether nothing of the step is left to train on; default: `sum(skipped) >= samples`.

        Raises:
            SkippedSamplesError: every sample of the step was skipped, or the run's skips exceed `max_fraction` of
                `planned`.
        """
        self.samples += samples
        self.skipped = Counter(self.skipped) + Counter({reason: n for reason, n in skipped.items() if n})
        if all_skipped is None:
            all_skipped = samples > 0 and sum(skipped.values()) >= samples
        if all_skipped:
            raise SkippedSamplesError(
                f"Every sample of step {step} was skipped (on_bad_sample='skip'), so nothing is left to train on; "
                f"the run stopped before this step changed the weights. {self._detail()}"
            )
        if self.planned and self.total > self.max_fraction * self.planned:
            were = "sample was" if self.total == 1 else "samples were"
            raise SkippedSamplesError(
                f"{self.total} {were} skipped by step {step} (on_bad_sample='skip'; {_counts(self.skipped)}), "
                f"more than max_skipped_fraction={self.max_fraction:g} of the {self.planned} samples the run trains "
                f"on. {self._detail()} Or raise max_skipped_fraction to accept more skips."
            )

    def _detail(self) -> str:
        fixes = [SKIP_FIXES[r] for r in SKIP_REASONS if self.skipped.get(r)]
        text = f"So far {self.total} of {self.samples} samples were skipped ({_counts(self.skipped)})."
        if self.first:
            text += " The first: " + " | ".join(message.rstrip(". ") for message in self.first) + "."
        if fixes:
            text += " To fix: " + "; ".join(fixes) + "."
        return text

    # ----------------------------------------------------------------------------------------- callback
    def on_train_begin(self, args, state, control, **kwargs):
        # A resumed run starts from the counts saved with its checkpoint (`state` was loaded from it).
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        if isinstance(saved, Mapping):
            attributes = saved.get("attributes", {})
            self.samples = int(attributes.get("samples", self.samples))
            self.skipped = Counter(attributes.get("skipped", self.skipped))
        self.max_fraction = getattr(args, "max_skipped_fraction", self.max_fraction)
        per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        self.planned = state.max_steps * per_step // max(getattr(args, "num_iterations", 1), 1)

    def state(self) -> dict:
        return {
            "args": {"max_fraction": self.max_fraction},
            "attributes": {"samples": self.samples, "skipped": dict(self.skipped)},
        }
