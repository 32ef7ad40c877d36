"""`videorft sft`: stage one of the VideoRFT recipe, supervised fine-tuning on chain-of-thought records.

trl's `SFTTrainer` (as `videorft_hf.sft_trainer.VideoSFTTrainer`: exact resume, bounded skips) with
`DataCollatorForVideoLanguageModeling`: videos are decoded by this package with the recipe's `VideoSamplingConfig`,
the loss covers the assistant's `<think>...</think>\\n<answer>...</answer><|im_end|>` only. Arguments:
`VideoRFTScriptArguments`, `VideoSFTConfig` and trl's `ModelConfig`; `--config recipe.yaml` sets them and
command-line flags override it.

    # the paper's SFT: Qwen2.5-VL-7B-Instruct on 8 GPUs with DeepSpeed ZeRO-2
    accelerate launch --config_file recipes/accelerate_configs/zero2.yaml -m videorft_hf.scripts.sft \\
        --config recipes/Qwen2.5-VL-7B-Instruct/sft/config_videorft.yaml \\
        --dataset_name path/to/VideoRFT-CoT-102K --media_root path/to/media
    # QLoRA on one GPU
    videorft sft --config recipes/Qwen2.5-VL-7B-Instruct/sft/config_qlora.yaml \\
        --dataset_name path/to/VideoRFT-CoT-102K --media_root path/to/media
    # resume from the newest checkpoint in output_dir (`latest` also works), or pass a checkpoint folder
    videorft sft --config ... --resume_from_checkpoint last
    # two CPU processes (the tiny recipe; `--multi_gpu` picks torchrun, `use_cpu: true` keeps it on CPU)
    accelerate launch --multi_gpu --num_processes 2 -m videorft_hf.scripts.sft --config recipes/tiny/sft.yaml ...

The model and processor are saved to `output_dir` (the LoRA adapter only, with `--use_peft`). Skipped samples
(`on_bad_sample: skip`) are logged one by one, totalled over all processes in the run record, and bounded: a step
whose samples are all skipped, or skips above `max_skipped_fraction` of the run, stop it with an error.
"""

from __future__ import annotations

import logging
import sys

from trl import ModelConfig

from videorft_hf.cards import apply_videorft_tags, record_run
from videorft_hf.configs import VideoRFTScriptArguments, VideoSFTConfig
from videorft_hf.modeling import (  # noqa: F401
    freeze_vision_tower,
    keep_updates,
    load_training_model,
    peft_config_for,
    vision_tower_name,
)
from videorft_hf.scripts import inputs
from videorft_hf.scripts.arguments import VideoRFTParser
from videorft_hf.scripts.inputs import log_skips, resolve_checkpoint  # noqa: F401  (the rules of both commands)

logger = logging.getLogger("videorft_hf.scripts.sft")


def make_parser(subparsers=None, prog: str | None = "videorft sft"):
    """Returns the `VideoRFTParser` (a trl `TrlParser`) for (`VideoRFTScriptArguments`, `VideoSFTConfig`,
    `ModelConfig`).

    Args:
        subparsers: an `argparse` subparsers action to register an `sft` command on, as trl's CLI does.
        prog: program name in the usage line.

    Returns:
        The parser; `parser.parse_args_and_config(argv)` returns the three dataclasses.

    Example:
        >>> script_args, sft_args, model_args = make_parser().parse_args_and_config(
        ...     ["--config", "recipes/tiny/sft.yaml", "--output_dir", "out"])  # doctest: +SKIP
    """
    dataclass_types = (VideoRFTScriptArguments, VideoSFTConfig, ModelConfig)
    return VideoRFTParser.for_command(subparsers, "sft", dataclass_types, prog, __doc__, "VideoRFT supervised fine-tuning")


def load_datasets(script_args, training_args):
    """Loads the training (and, when evaluating, the test) split as SFT rows (`videorft_hf.scripts.inputs`).

    Returns:
        `(train_dataset, eval_dataset or None)`.
    """
    return inputs.load_datasets(script_args, training_args, include_target=True, streaming=script_args.dataset_streaming)


def build_trainer(script_args, training_args, model_args):
    """Builds the `VideoSFTTrainer` (a `trl.SFTTrainer`) of a run: model, processor, collator, datasets, LoRA and a
    frozen vision tower.

    Args:
        script_args: `VideoRFTScriptArguments`.
        training_args: `VideoSFTConfig`. `remove_unused_columns` is set to False (the collator needs the `video`
            column) and `dataset_kwargs["skip_prepare_dataset"]` to True (the collator tokenizes).
        model_args: trl's `ModelConfig`.

    Returns:
        The trainer, ready for `.train()`.

    Example:
        >>> parser = make_parser()
        >>> trainer = build_trainer(*parser.parse_args_and_config(["--config", "recipes/tiny/sft.yaml"]))  # doctest: +SKIP
    """
    from transformers import AutoProcessor

    from videorft_hf.collators import DataCollatorForVideoLanguageModeling
    from videorft_hf.sft_trainer import VideoSFTTrainer

    if not model_args.model_name_or_path:
        raise ValueError("Pass --model_name_or_path: a checkpoint folder or Hub model id.")
    if training_args.remove_unused_columns:
        logger.info("Setting remove_unused_columns=False: the collator reads the `video` and `image` columns.")
        training_args.remove_unused_columns = False
    training_args.dataset_kwargs = {**(training_args.dataset_kwargs or {}), "skip_prepare_dataset": True}

    train_dataset, eval_dataset = load_datasets(script_args, training_args)
    processor = AutoProcessor.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
    )
    model = load_training_model(model_args, training_args)
    peft_config = peft_config_for(model_args, model, script_args.freeze_vision_tower)
    collator = DataCollatorForVideoLanguageModeling.from_config(processor, training_args)
    trainer = VideoSFTTrainer(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=peft_config,
    )
    apply_videorft_tags(trainer, "sft")  # trl's checkpoint cards and push_to_hub carry trl, sft, videorft
    if script_args.freeze_vision_tower and peft_config is None:
        freeze_vision_tower(trainer.model)
    keep_updates(trainer.model, training_args)  # after freezing: frozen weights keep their dtype
    return trainer


def train(script_args, training_args, model_args):
    """Runs the SFT stage: build the trainer, train (resuming when asked), save model and processor.

    Returns:
        The trainer after training.
    """
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)  # before loading
    trainer = build_trainer(script_args, training_args, model_args)
    state = trainer.accelerator.state
    logger.info(
        "Process %d of %d (%s): %s training rows.",
        state.process_index,
        state.num_processes,
        state.distributed_type.value,
        len(trainer.train_dataset) if hasattr(trainer.train_dataset, "__len__") else "streaming",
    )
    run_record = record_run(trainer, "sft", script_args, training_args, model_args)
    trainer.train(resume_from_checkpoint=checkpoint)
    log_skips(trainer)
    if trainer.is_fsdp_enabled:  # SHARDED_STATE_DICT checkpoints resume; the final model is saved whole
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(training_args.output_dir)  # the processor too (it is the trainer's processing_class)
    run_record.write(training_args.output_dir)  # what ran, and its card (also for `videorft push`)
    trainer.accelerator.print(f"Model and processor saved to {training_args.output_dir}.")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    # No process leaves while another still saves: a process that exits first can take the process group's store
    # with it (processes aborted at exit on a loaded machine).
    trainer.accelerator.wait_for_everyone()
    if hasattr(trainer, "end"):  # transformers >= 5.18: finishes trackers, destroys the process group
        trainer.end()
    return trainer


def main(argv: list[str] | None = None) -> int:
    """Entry point of `videorft sft` and `python -m videorft_hf.scripts.sft` (also under `accelerate launch`)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    script_args, training_args, model_args = make_parser().parse_args_and_config(argv)
    train(script_args, training_args, model_args)
    return 0


if __name__ == "__main__":
    from videorft_hf.cli import run_command

    sys.exit(run_command(main, sys.argv[1:], "videorft sft"))
