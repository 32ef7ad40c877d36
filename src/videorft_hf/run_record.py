"""The run record: what a training run actually did, saved with its checkpoint as `videorft_run.json`.

`videorft sft` and `videorft grpo` write it next to the model and in every checkpoint folder
(`videorft_hf.cards.record_run`); `videorft push` renders the model card from it (with the adapter's `adapter_config.json` and the trainer's step count), so a card states the training
that happened, not the values of a YAML file read later. The record is plain JSON, readable without this package:

    {"stage": "grpo", "model_name_or_path": "out/sft", "base_model": "Qwen/Qwen2.5-VL-7B-Instruct",
     "checkpoint": "adapter", "quantization": "4-bit nf4", "dataset_name": "you/VideoRFT-RL-310K", "train_rows": 310000,
     "system_prompt": null, "reward_funcs": ["format_reward", ...], "training_args": {"learning_rate": 1e-06, ...},
     "sampling": {"preset": "videorft-train", "fps": 2.0, ...}, "on_bad_sample": "skip",
     "skipped_samples": {"samples": 16000, "skipped": 12, "by_reason": {"bad_media": 12}}, "global_step": 1000,
     "epoch": 0.03, "hardware": "8x NVIDIA H100 80GB HBM3"}

`skipped_samples` (with `on_bad_sample: skip`) counts over all processes the samples the run saw and skipped, by
reason (`videorft_hf.skips`).

A field whose value the run did not have is absent, never a placeholder.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RUN_RECORD_NAME = "videorft_run.json"
# The vocabulary of run records and model cards (`cards` uses it), here because this module imports no library:
# `videorft push --help` offers these choices without importing huggingface_hub or torch.
STAGES = ("sft", "grpo")
CHECKPOINT_KINDS = ("auto", "full", "adapter", "merged")
DEFAULT_PIPELINE_TAG = "video-text-to-text"

# The fields of trl's and transformers' configs a record states (when the run's config has them), in the order a card
# shows them; the package's own training fields follow (`stated_training_args`).
TRAINER_ARGS = (
    "learning_rate",
    "lr_scheduler_type",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "weight_decay",
    "max_grad_norm",
    "beta",
    "loss_type",
    "num_generations",
    "num_iterations",
    "scale_rewards",
    "temperature",
    "top_p",
    "max_completion_length",
    "max_length",
    "bf16",
    "disable_dropout",
    "activation_checkpointing",
    "seed",
)
_PEFT_FIELDS = ("r", "lora_alpha", "lora_dropout", "target_modules", "exclude_modules")


def stated_training_args() -> tuple[str, ...]:
    """The training arguments a record states, in the order a card shows them: `TRAINER_ARGS`, then the fields of the
    package's precision settings (`videorft_hf.settings.PrecisionSettings`)."""
    from .settings import settings_fields

    return (*TRAINER_ARGS, *settings_fields("precision"))


def run_settings(trainer: Any, training_args: Any) -> Any:
    """The settings a trainer ran with (`videorft_hf.settings.RunSettings`): its own (`VideoGRPOTrainer`,
    `VideoSFTTrainer`), else resolved from its config, model and processor (a stock trl trainer)."""
    settings = getattr(trainer, "settings", None)
    if settings is not None:
        return settings
    from .settings import RunSettings

    model_config = getattr(getattr(trainer, "model", None), "config", None)
    processor = getattr(trainer, "processing_class", None)
    return RunSettings.resolve(training_args, model_config, processor if hasattr(processor, "tokenizer") else None)


def build_run_record(stage: str, trainer: Any, script_args: Any, training_args: Any, model_args: Any) -> dict:
    """The record of a finished run, from the objects that ran it.

    The sampling, shaping, precision, rollout generator and `on_bad_sample` come from the settings the trainer ran with
    (`run_settings`), so the record states what ran: for Qwen3-VL, frame sides in multiples of its patch factor 32,
    not the presets' 28.

    Args:
        stage: `"sft"` or `"grpo"`.
        trainer: The trainer after `train()` (its `state`, `settings`, `reward_funcs` and `train_dataset` are read).
        script_args: The run's `VideoRFTScriptArguments`, or None (a trainer built in Python: no dataset name or
            system prompt is recorded).
        training_args: The run's `VideoSFTConfig` / `VideoGRPOConfig` (or a plain trl config).
        model_args: trl's `ModelConfig`, or None (the model id is then the model config's `name_or_path`).

    Returns:
        The record as a JSON-serialisable dict.

    Example:
        >>> record = build_run_record("grpo", trainer, script_args, training_args, model_args)  # doctest: +SKIP
        >>> record["training_args"]["learning_rate"]  # doctest: +SKIP
        0.0002
    """
    model = model_args.model_name_or_path if model_args is not None else _model_id(trainer.model)
    record: dict[str, Any] = {"stage": stage, "model_name_or_path": model, "base_model": _root_base_model(model)}
    peft_config = getattr(trainer.model, "peft_config", None)
    if peft_config:
        config = next(iter(peft_config.values()))
        record["checkpoint"] = "adapter"
        record["adapter"] = {
            "peft_type": str(getattr(config.peft_type, "value", config.peft_type)),
            **{name: _plain(getattr(config, name)) for name in _PEFT_FIELDS if getattr(config, name, None) is not None},
        }
    else:
        record["checkpoint"] = "full"
    record["quantization"] = _quantization(trainer.model)
    if script_args is not None:
        record["dataset_name"] = script_args.dataset_name
        record["dataset_config"] = script_args.dataset_config
    if hasattr(trainer.train_dataset, "__len__"):
        record["train_rows"] = len(trainer.train_dataset)
    if script_args is not None:
        record["system_prompt"] = script_args.system_prompt
        record["freeze_vision_tower"] = getattr(script_args, "freeze_vision_tower", None)
    # What the optimiser updated, as trained (float32 master weights unless DeepSpeed keeps its own).
    dtypes = {str(p.dtype).removeprefix("torch.") for p in trainer.model.parameters() if p.requires_grad}
    record["trainable_dtypes"] = sorted(dtypes) or None
    if stage == "grpo":
        record["reward_funcs"] = [getattr(func, "__name__", str(func)) for func in trainer.reward_funcs]
        if training_args.reward_weights is not None:
            record["reward_weights"] = [float(w) for w in training_args.reward_weights]
        if script_args is not None and "semantic_consistency_reward" in record["reward_funcs"]:
            record["semantic_model_name_or_path"] = script_args.semantic_model_name_or_path
    settings = run_settings(trainer, training_args)
    if stage == "grpo":
        record["shaping"] = {name: _plain(value) for name, value in settings.group("shaping").items()}
        # The generator that ran the rollouts ("vllm", "compiled" or "transformers"), then the config's fields.
        record["generation"] = {
            "engine": settings.generation_engine,
            **{name: _plain(value) for name, value in settings.group("generation").items()},
        }
    record["training_args"] = {
        name: _plain(getattr(training_args, name)) for name in TRAINER_ARGS if hasattr(training_args, name)
    }
    record["training_args"].update({name: _plain(value) for name, value in settings.group("precision").items()})
    if hasattr(training_args, "sampling_config"):  # a plain trl config has no video sampling of its own
        record["sampling"] = settings.sampling_record()
    record["on_bad_sample"] = settings.video.on_bad_sample if hasattr(training_args, "on_bad_sample") else None
    tally = getattr(trainer, "skip_tally", None)
    if record["on_bad_sample"] == "skip" and tally is not None:
        record["skipped_samples"] = tally.summary()
    record["global_step"] = trainer.state.global_step
    if trainer.state.epoch is not None:
        record["epoch"] = round(float(trainer.state.epoch), 4)
    record["hardware"] = _hardware(trainer.accelerator.state)
    return {key: value for key, value in record.items() if value is not None or key == "system_prompt"}


def write_run_record(output_dir: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Writes `record` to `<output_dir>/videorft_run.json` and returns the path."""
    path = Path(output_dir) / RUN_RECORD_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(record), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_run_record(checkpoint: str | os.PathLike) -> dict | None:
    """The run record saved with a checkpoint folder, or None when it has none."""
    path = Path(checkpoint) / RUN_RECORD_NAME
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def _root_base_model(model_name_or_path: str | None) -> str | None:
    """The model a chain of runs started from: a checkpoint folder with a run record inherits its base model."""
    if model_name_or_path and os.path.isdir(model_name_or_path):
        previous = read_run_record(model_name_or_path)
        if previous and previous.get("base_model"):
            return previous["base_model"]
    return model_name_or_path


def _model_id(model: Any) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "name_or_path", None) or None


def _quantization(model: Any) -> str | None:
    """"4-bit nf4" / "8-bit" from the model's own `quantization_config`, None for unquantized weights."""
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    if config is None:
        return None
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    if values.get("load_in_4bit"):
        return f"4-bit {values.get('bnb_4bit_quant_type', 'fp4')}"
    if values.get("load_in_8bit"):
        return "8-bit"
    return str(values.get("quant_method", "quantized"))


def _hardware(state: Any) -> str:
    import torch

    count = state.num_processes
    if state.device.type == "cuda":
        return f"{count}x {torch.cuda.get_device_name(state.device)}"
    return f"{count}x {state.device.type.upper()} process{'es' if count > 1 else ''}"


def _plain(value: Any) -> Any:
    """A JSON value: enums (`lr_scheduler_type`) by their value, sets sorted, tuples as lists."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value)
    return list(value) if isinstance(value, tuple) else value
