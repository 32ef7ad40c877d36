"""What `videorft sft` and `videorft grpo` read before training (the dataset splits and the checkpoint to resume)
and the skip total they report after it.

Both commands follow one rule for each, so a recipe written for one stage means the same in the other:

- the training split is `dataset_train_split`; the test split (`dataset_test_split`) is loaded too when the run
  evaluates (`eval_strategy` other than "no");
- `--resume_from_checkpoint` takes a checkpoint folder, or `last` (also spelled `latest`, `auto` or `true`) for the
  newest `checkpoint-*` folder in `output_dir`; with none there the run starts afresh and says so. Anything else is
  a `ResumeCheckpointError`, raised before a model loads.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

RESUME_LAST = ("last", "latest", "auto", "true", "True")


class ResumeCheckpointError(ValueError):
    """`--resume_from_checkpoint` names neither a checkpoint folder nor `last`."""


def resolve_checkpoint(resume_from_checkpoint: str | bool | None, output_dir: str) -> str | None:
    """The checkpoint folder `--resume_from_checkpoint` means (see the module docstring), or None to start afresh.

    Raises:
        ResumeCheckpointError: the value is not a folder and not one of `RESUME_LAST`.

    Example:
        >>> resolve_checkpoint(None, "out") is None
        True
    """
    from transformers.trainer_utils import get_last_checkpoint

    if resume_from_checkpoint is True or resume_from_checkpoint in RESUME_LAST:
        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            logger.info("No checkpoint in %s to resume from; starting afresh.", output_dir)
        return last
    if resume_from_checkpoint and not os.path.isdir(resume_from_checkpoint):
        raise ResumeCheckpointError(
            f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a folder (relative paths start at "
            f"{os.getcwd()}); pass a checkpoint folder, or 'last' for the newest checkpoint in {output_dir}."
        )
    return resume_from_checkpoint or None


def log_skips(trainer) -> None:
    """Prints the run's skipped samples over all processes (`trainer.skip_tally`), once, when there were any."""
    tally = getattr(trainer, "skip_tally", None)
    if tally is not None and tally.total:
        by_reason = ", ".join(f"{reason}={count}" for reason, count in tally.summary()["by_reason"].items())
        trainer.accelerator.print(
            f"Skipped {tally.total} of {tally.samples} samples over all processes (on_bad_sample='skip'): {by_reason}. "
            f"The run record ({trainer.args.output_dir}/videorft_run.json) states them."
        )


def load_datasets(script_args, training_args, include_target: bool, streaming: bool = False):
    """Loads the training split, and the test split when `training_args.eval_strategy` is not "no".

    Args:
        script_args: `VideoRFTScriptArguments` (dataset name, subset, splits, media root, system prompt, ...).
        training_args: the stage's config (`eval_strategy`, `main_process_first`).
        include_target: keep the assistant's target turn (SFT) or leave the prompt only (GRPO).
        streaming: stream the splits (`dataset_streaming`).

    Returns:
        `(train_dataset, eval_dataset or None)`, the training split cut to `max_train_samples` when set.
    """
    from videorft_hf.data import load_videorft_dataset

    if not script_args.dataset_name:
        raise ValueError("Pass --dataset_name: a dataset folder, a JSON/JSONL file or a Hub dataset id.")
    kwargs = {
        "media_root": script_args.media_root,
        "system_prompt": script_args.system_prompt,
        "on_invalid": script_args.on_invalid_record,
    }
    if include_target:
        kwargs["include_target"] = True
    if streaming:
        kwargs["streaming"] = True
    with training_args.main_process_first(desc="loading the dataset"):
        train = load_videorft_dataset(
            script_args.dataset_name, script_args.dataset_config, split=script_args.dataset_train_split, **kwargs
        )
        evaluation = None
        if training_args.eval_strategy != "no":
            evaluation = load_videorft_dataset(
                script_args.dataset_name, script_args.dataset_config, split=script_args.dataset_test_split, **kwargs
            )
    if script_args.max_train_samples is not None:
        if streaming:
            train = train.take(script_args.max_train_samples)
        else:
            train = train.select(range(min(script_args.max_train_samples, len(train))))
    return train, evaluation
