"""`VideoSFTTrainer`: trl's `SFTTrainer` that resumes exactly and keeps skipped samples within bounds.

`videorft sft` trains with it; in a trl script it replaces `SFTTrainer` unchanged (same constructor). It adds:

- exact resume (`videorft_hf.checkpoints.ResumeExactly`): full checkpoints load under the model's key mapping with
  every key checked, adapter checkpoints with every adapter key checked; a finished run trains nothing;
- with `DataCollatorForVideoLanguageModeling` and `on_bad_sample="skip"`, the bounds of `videorft_hf.skips`: at the
  last micro-batch of every optimizer step, before its forward pass, the step's label tokens and the collator's
  sample and skip counts are summed over processes; a step without a single label token (every sample skipped: a
  sample the collator keeps always has labels) or skips above `max_skipped_fraction` of the run stop it with a
  `SkippedSamplesError`. The counts (`skip_tally`) go into the run record and the card.

The collator's counts include the batches the data loader has already prepared for the next step, so they run at
most a few batches ahead of the steps taken. Samples skipped while evaluating are not counted.

Example:
    ```python
    from videorft_hf.sft_trainer import VideoSFTTrainer

    trainer = VideoSFTTrainer(model, args=sft_config, data_collator=collator, train_dataset=dataset,
                              processing_class=processor)
    trainer.train(resume_from_checkpoint="out/checkpoint-500")
    ```
"""

from __future__ import annotations

import logging

import torch
from trl import SFTTrainer

from .checkpoints import ResumeExactly
from .collators import DataCollatorForVideoLanguageModeling
from .skips import DEFAULT_MAX_SKIPPED_FRACTION, SKIP_REASONS, SkipTally

logger = logging.getLogger(__name__)

__all__ = ["VideoSFTTrainer"]


class VideoSFTTrainer(ResumeExactly, SFTTrainer):
    """`trl.SFTTrainer` with exact resume and bounded skips (see the module docstring); its constructor is
    `SFTTrainer`'s.

    Attributes:
        skip_tally: the run's skipped samples over all processes (`videorft_hf.skips.SkipTally`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip_tally = SkipTally(getattr(self.args, "max_skipped_fraction", DEFAULT_MAX_SKIPPED_FRACTION))
        self.add_callback(self.skip_tally)
        self._step_labels = 0
        self._counted = self._collator_counts()  # the collator's counts already in the tally (or left out)

    def _skips_counted(self) -> bool:
        collator = self.data_collator
        return isinstance(collator, DataCollatorForVideoLanguageModeling) and collator.on_bad_sample == "skip"

    def _collator_counts(self) -> list[int]:
        """[samples seen, skipped per reason in `SKIP_REASONS` order] of this process's collator."""
        if not self._skips_counted():
            return [0] * (1 + len(SKIP_REASONS))
        skipped = self.data_collator.skipped_samples
        return [self.data_collator.samples_seen, *(skipped[reason] for reason in SKIP_REASONS)]

    def training_step(self, model, inputs, num_items_in_batch=None):
        # Adds: the skip bounds, checked on the step's last micro-batch before its forward pass.
        if self._skips_counted():
            labels = inputs.get("labels")
            self._step_labels += int((labels != -100).sum()) if labels is not None else 0
            if self.accelerator.sync_gradients:
                self._count_step()
        return super().training_step(model, inputs, num_items_in_batch)

    def _count_step(self) -> None:
        counts = self._collator_counts()
        local = [self._step_labels] + [now - before for now, before in zip(counts, self._counted, strict=True)]
        self._counted, self._step_labels = counts, 0
        total = self.accelerator.gather(torch.tensor([local], device=self.accelerator.device)).sum(dim=0).tolist()
        labels, samples, *skipped = (int(value) for value in total)
        tally = self.skip_tally
        tally.note(self.data_collator.first_skips())
        tally.add(
            samples,
            dict(zip(SKIP_REASONS, skipped, strict=True)),
            step=self.state.global_step + 1,
            all_skipped=labels == 0 and tally.total + sum(skipped) > 0,
        )

    def evaluate(self, *args, **kwargs):
        # Adds: samples seen or skipped while evaluating stay out of the training run's counts.
        before = self._collator_counts()
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            after = self._collator_counts()
            self._counted = [counted + a - b for counted, a, b in zip(self._counted, after, before, strict=True)]
