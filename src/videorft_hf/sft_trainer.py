"""`VideoSFTTrainer`: trl's `SFTTrainer` that resumes exactly and keeps skipped samples within bounds.

`videorft sft` trains with it; in a trl script it replaces `SFTTrainer` unchanged (same constructor). It adds:

- exact resume (`videorft_hf.checkpoints.ResumeExactly`): full checkpoints load under the model's key mapping with
  every key checked, adapter checkpoints with every adapter key checked; a finished run trains nothing;
- with `DataCollatorForVideoLanguageModeling` and `on_bad_sample="skip"`, the bounds of `videorft_hf.skips`: the
  collator reports each batch's skips in the batch (`report_skips`, turned on here), and on the last micro-batch of
  every optimizer step, before its forward pass, the step's samples, skips and label tokens are summed over
  processes. A step without a label token (every sample skipped: a sample the collator keeps always has labels) or
  skips above `max_skipped_fraction` of the run stop it with a `SkippedSamplesError`. The counts (`skip_tally`) go
  into the run record and the card. Samples skipped while evaluating are logged, not counted.

Example:
    ```python
    from videorft_hf.sft_trainer import VideoSFTTrainer

    trainer = VideoSFTTrainer(model, args=sft_config, data_collator=collator, train_dataset=dataset,
                              processing_class=processor)
    trainer.train(resume_from_checkpoint="out/checkpoint-500")
    ```
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

import torch
from trl import SFTTrainer

from .checkpoints import ResumeExactly
from .collators import DataCollatorForVideoLanguageModeling
from .settings import RunSettings
from .skips import SKIP_REASONS, SKIPS_KEY, SkipTally

logger = logging.getLogger(__name__)

__all__ = ["VideoSFTTrainer"]


class VideoSFTTrainer(ResumeExactly, SFTTrainer):
    """`trl.SFTTrainer` with exact resume and bounded skips (see the module docstring); its constructor is
    `SFTTrainer`'s.

    Attributes:
        settings: the run's settings (`videorft_hf.settings.RunSettings`), with the sampling the collator decodes
            with (its processor's patch factor).
        skip_tally: the run's skipped samples over all processes (`videorft_hf.skips.SkipTally`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        collator = self.data_collator
        processor = self.processing_class if hasattr(self.processing_class, "tokenizer") else None
        self.settings = RunSettings.resolve(self.args, processor=processor)
        if isinstance(collator, DataCollatorForVideoLanguageModeling):
            # The collator decodes; a collator built with its own sampling is what ran.
            self.settings = dataclasses.replace(self.settings, sampling=collator.sampling_config)
        self.skip_tally = SkipTally(self.settings.skip_limit.max_skipped_fraction)
        self.add_callback(self.skip_tally)
        if isinstance(collator, DataCollatorForVideoLanguageModeling) and collator.on_bad_sample == "skip":
            collator.report_skips = True
        self._step_counts: Counter = Counter()  # this process's samples, skips and labels in the current step

    def training_step(self, model, inputs, num_items_in_batch=None):
        # Adds: the skip bounds, checked on the step's last micro-batch before its forward pass.
        report = inputs.pop(SKIPS_KEY, None)
        if report is not None:
            labels = inputs.get("labels")
            self._step_counts.update(report.skipped)
            self._step_counts["samples"] += report.samples
            self._step_counts["labels"] += int((labels != -100).sum()) if labels is not None else 0
            self.skip_tally.note(report.first)
            if self.accelerator.sync_gradients:
                self._count_step()
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model, inputs, *args, **kwargs):
        inputs.pop(SKIPS_KEY, None)  # an evaluation batch's report (training steps remove theirs first)
        return super().compute_loss(model, inputs, *args, **kwargs)

    def _count_step(self) -> None:
        names = ["labels", "samples", *SKIP_REASONS]
        local = torch.tensor([[self._step_counts[name] for name in names]], device=self.accelerator.device)
        self._step_counts = Counter()
        total = dict(zip(names, self.accelerator.gather(local).sum(dim=0).tolist(), strict=True))
        skipped = {reason: int(total[reason]) for reason in SKIP_REASONS}
        nothing_left = total["labels"] == 0 and sum(skipped.values()) > 0
        self.skip_tally.add(int(total["samples"]), skipped, step=self.state.global_step + 1, all_skipped=nothing_left)
