"""Stage two of VideoRFT: GRPO with format, accuracy and semantic-consistency rewards on video.

One GPU with 4-bit QLoRA:

    accelerate launch --num_processes 1 -m videorft_hf.scripts.grpo \\
        --config recipes/Qwen2.5-VL-7B-Instruct/grpo/config_qlora.yaml \\
        --dataset_name path/to/VideoRFT-RL-310K --media_root path/to/media

Eight GPUs with DeepSpeed ZeRO-3 (the paper's recipe):

    accelerate launch --config_file recipes/accelerate_configs/zero3.yaml -m videorft_hf.scripts.grpo \\
        --config recipes/Qwen2.5-VL-7B-Instruct/grpo/config_videorft.yaml \\
        --dataset_name path/to/VideoRFT-RL-310K --media_root path/to/media

On a laptop CPU with a tiny model (what the demo runs):

    videorft grpo --config recipes/tiny/grpo.yaml --model_name_or_path tiny-model \\
        --dataset_name data/rl.jsonl --media_root data --output_dir outputs/tiny-grpo

Resume with `--resume_from_checkpoint last` (the newest checkpoint in `output_dir`; `latest` also works) or a
checkpoint folder. With `--eval_strategy steps` (or `epoch`) the `--dataset_test_split` split is loaded and evaluated.

Flags override the values of `--config`. The model, its processor and the run record (`videorft_run.json`, from
which `videorft push` writes the model card) are saved to `output_dir`.
"""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger(__name__)


def make_parser(subparsers=None, prog: str | None = "videorft grpo"):
    """The parser of `videorft grpo` (`VideoRFTScriptArguments`, `VideoGRPOConfig`, `ModelConfig`), registered as
    `grpo` on `subparsers` when given; `parse_args_and_config(argv)` returns the three dataclasses."""
    from trl import ModelConfig

    from videorft_hf.configs import VideoGRPOConfig, VideoRFTScriptArguments
    from videorft_hf.scripts.arguments import VideoRFTParser

    dataclass_types = (VideoRFTScriptArguments, VideoGRPOConfig, ModelConfig)
    return VideoRFTParser.for_command(subparsers, "grpo", dataclass_types, prog, __doc__, "VideoRFT GRPO on video")


def train(script_args, training_args, model_args):
    """Runs GRPO and saves the model and processor to `training_args.output_dir`. Returns the trainer."""
    from trl import get_quantization_config

    from videorft_hf.cards import record_run
    from videorft_hf.modeling import freeze_vision_tower, model_structure, peft_config_for
    from videorft_hf.rewards import get_reward_funcs
    from videorft_hf.scripts.inputs import load_datasets, log_skips, resolve_checkpoint
    from videorft_hf.trainer import VideoGRPOTrainer

    if not script_args.dataset_name:
        raise ValueError("Pass --dataset_name (a dataset folder, a JSON/JSONL file or a Hub dataset id).")
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    reward_funcs = get_reward_funcs(script_args)  # a misspelled reward model fails here, before anything loads
    dataset, eval_dataset = load_datasets(script_args, training_args, include_target=False)

    quantization_config = get_quantization_config(model_args)
    model_init_kwargs = dict(
        revision=model_args.model_revision,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    )
    training_args.model_init_kwargs = model_init_kwargs

    model, peft_config = model_args.model_name_or_path, None
    if model_args.use_peft:
        peft_config = peft_config_for(model_args, model_structure(model, model_args), script_args.freeze_vision_tower)
    elif script_args.freeze_vision_tower:
        # The tower is frozen before the trainer keeps trainable weights in float32, so that it stays as loaded.
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(model, **model_init_kwargs)
        freeze_vision_tower(model)

    trainer = VideoGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        quantization_config=quantization_config,
        peft_config=peft_config,
    )
    state = trainer.accelerator.state
    logger.info(
        "Process %d of %d (%s): %d training rows.",
        state.process_index, state.num_processes, state.distributed_type.value, len(dataset),
    )
    run_record = record_run(trainer, "grpo", script_args, training_args, model_args)
    trainer.train(resume_from_checkpoint=checkpoint)
    log_skips(trainer)
    if trainer.is_fsdp_enabled:  # SHARDED_STATE_DICT checkpoints resume; the final model is saved whole
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(training_args.output_dir)
        logger.info("Model and processor saved to %s", training_args.output_dir)
    run_record.write(training_args.output_dir)  # what ran, and its card (also for `videorft push`)
    # No process leaves while another still saves: a process that exits first can take the process group's store
    # with it (processes aborted at exit on a loaded machine).
    trainer.accelerator.wait_for_everyone()
    return trainer


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    script_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    train(script_args, training_args, model_args)
    return 0


if __name__ == "__main__":
    from videorft_hf.cli import run_command

    sys.exit(run_command(main, sys.argv[1:], "videorft grpo"))
