"""Resuming a run exactly: a checkpoint's weights loaded under the model's own key mapping, every key checked, and a
finished run that trains nothing.

transformers 5 saves a model in its checkpoint format: `save_pretrained` reverts the model's key conversion (for
Qwen2-VL and Qwen2.5-VL, `model.visual.*` is written as `visual.*` and `model.language_model.*` as `model.*`), and
`Trainer._save` writes every checkpoint this way. `Trainer._load_from_checkpoint` reads the file back with a plain
`load_state_dict(strict=False)` under the live names, so on resume nothing but the unconverted keys (the output
layer) is restored: the run goes on from the base weights, with a warning listing missing and unexpected keys.
`ResumeExactly` replaces that read for full-weight checkpoints with `load_checkpoint_weights`, which applies the
model's conversion mapping as `from_pretrained` does (the inverse of what the save applied) and treats a missing or
unexpected key as an error. Adapter checkpoints (LoRA, QLoRA) load through peft, as before, with its missing and
unexpected adapter keys also an error. FSDP and DeepSpeed checkpoints keep their own loaders (they save live names).

Values are copied into the live tensors, which keep their dtype: float32 trainable weights (`modeling.keep_updates`)
get their saved float32 values back bit for bit, frozen bf16 weights their bf16 values. A checkpoint tensor of higher
precision than the live one (float32 saved, bfloat16 live) would be rounded, and is an error.

A run resumed from a checkpoint at (or past) its last step trains nothing: transformers would run one more step of
the epoch before it checks `max_steps`. The model, optimizer and trainer state are restored from the checkpoint, so
saving the model afterwards writes the checkpoint's weights.

Example:
    ```python
    from trl import SFTTrainer
    from videorft_hf.checkpoints import ResumeExactly

    class MySFTTrainer(ResumeExactly, SFTTrainer):
        pass

    MySFTTrainer(model, args=args, train_dataset=dataset).train(resume_from_checkpoint="out/checkpoint-500")
    ```
"""

from __future__ import annotations

import json
import logging
import os

import torch

from .internals import ignored_on_save, weights_in_model_names

logger = logging.getLogger(__name__)

__all__ = ["CheckpointMismatchError", "ResumeExactly", "load_checkpoint_weights", "weights_in_model_names"]

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
TORCH_WEIGHTS_FILE = "pytorch_model.bin"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
# Keys named in an error before "and N more".
_KEYS_SHOWN = 8


class CheckpointMismatchError(ValueError):
    """A checkpoint's weights do not match the model being resumed: missing or unexpected keys, other shapes, or
    values that the model's dtype would round."""


def _names(keys, limit: int = _KEYS_SHOWN) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _read_weights(folder: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    single, index = os.path.join(folder, WEIGHTS_FILE), os.path.join(folder, WEIGHTS_INDEX_FILE)
    if os.path.isfile(single):
        return load_file(single, device="cpu")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as stream:
            shards = sorted(set(json.load(stream)["weight_map"].values()))
        state_dict = {}
        for shard in shards:
            state_dict.update(load_file(os.path.join(folder, shard), device="cpu"))
        return state_dict
    return torch.load(os.path.join(folder, TORCH_WEIGHTS_FILE), map_location="cpu", weights_only=True)


def load_checkpoint_weights(model, checkpoint: str | os.PathLike) -> list[str]:
    """Loads the full weights of a checkpoint folder (as `Trainer` or `save_pretrained` wrote them) into `model`.

    Checkpoint names are mapped to the model's names with its conversion mapping (`weights_in_model_names`); then
    every model weight must be in the checkpoint (a weight tied to a loaded one, such as a tied output layer, comes
    with it) and every checkpoint weight must be a model weight of the same shape. Values are copied into the live
    tensors, which keep their dtype; a checkpoint tensor of higher precision than its live tensor is refused.

    Args:
        model: the unwrapped model (not DDP), on any device.
        checkpoint: a folder with `model.safetensors`, a sharded `model.safetensors.index.json` or `pytorch_model.bin`.

    Returns:
        The model names loaded.

    Raises:
        CheckpointMismatchError: missing or unexpected keys, other shapes or a narrowing dtype, naming the checkpoint
            and the keys. Nothing is loaded then.

    Example:
        >>> load_checkpoint_weights(trainer.model, "out/checkpoint-500")  # doctest: +SKIP
    """
    checkpoint = os.fspath(checkpoint)
    saved = weights_in_model_names(model, _read_weights(checkpoint))
    live = model.state_dict()
    loaded_storage = {live[name].data_ptr() for name in saved if name in live}
    missing = [
        name for name, tensor in live.items()
        if name not in saved and tensor.data_ptr() not in loaded_storage and not ignored_on_save(model, name)
    ]
    unexpected = [name for name in saved if name not in live]
    shapes = [
        f"{name} {tuple(saved[name].shape)} in the checkpoint, {tuple(live[name].shape)} in the model"
        for name in saved if name in live and saved[name].shape != live[name].shape
    ]
    narrowing = [
        f"{name} ({str(saved[name].dtype).removeprefix('torch.')} saved, {str(live[name].dtype).removeprefix('torch.')}"
        " in the model)"
        for name in saved
        if name in live and saved[name].is_floating_point() and live[name].is_floating_point()
        and torch.finfo(saved[name].dtype).bits > torch.finfo(live[name].dtype).bits
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} model weights are not in it: {_names(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} of its weights are not in the model: {_names(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} weights differ in shape: {_names(shapes, 3)}")
    if narrowing:
        problems.append(
            f"{len(narrowing)} weights would be rounded to a lower precision: {_names(narrowing, 3)}. Resume with the "
            "settings the checkpoint was trained with (trainable_dtype, freeze_vision_tower, dtype)"
        )
    if problems:
        raise CheckpointMismatchError(
            f"{checkpoint}: the checkpoint does not match the model being resumed: {'; '.join(problems)}. Resume "
            "from a checkpoint of this model, trained with the same settings (architecture, full fine-tuning or "
            "adapter, frozen modules)."
        )
    with torch.no_grad():
        for name, tensor in saved.items():
            live[name].copy_(tensor)
    return sorted(saved)


def _has_full_weights(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, name)) for name in (WEIGHTS_FILE, WEIGHTS_INDEX_FILE, TORCH_WEIGHTS_FILE))


def _load_adapter_exactly(model, checkpoint: str) -> None:
    """peft's adapter load, as `Trainer` does it for a single adapter, with missing or unexpected adapter keys an
    error instead of a warning."""
    adapter = model.active_adapters[0]
    result = model.load_adapter(checkpoint, adapter, is_trainable=True)
    missing = list(getattr(result, "missing_keys", []) or [])
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"{len(missing)} adapter weights are not in it: {_names(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} of its weights are not in the model's adapter: {_names(unexpected)}")
        raise CheckpointMismatchError(
            f"{checkpoint}: the adapter checkpoint does not match the adapter being resumed: {'; '.join(problems)}. "
            "Resume with the LoRA settings it was trained with (lora_r, lora_target_modules, freeze_vision_tower)."
        )


def _checkpoint_step(checkpoint: str) -> int | None:
    path = os.path.join(checkpoint, "trainer_state.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as stream:
        return json.load(stream).get("global_step")


class ResumeExactly:
    """Mixin for a `transformers.Trainer` subclass (put it first): resuming restores exactly what was saved.

    - Full-weight checkpoints load with `load_checkpoint_weights` (the model's key mapping, every key checked); adapter
      checkpoints through peft with every adapter key checked. FSDP and DeepSpeed checkpoints load as in transformers.
    - A run resumed at or past its last step trains nothing and says so (the state, weights and optimizer are
      restored, so a following `save_model` writes the checkpoint's weights).
    - `load_best_model_at_end` reads the best full-weight checkpoint the same way.

    Optimizer, scheduler, RNG and step are restored by `Trainer` itself.
    """

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            from transformers.trainer_utils import get_last_checkpoint

            checkpoint = get_last_checkpoint(self.args.output_dir)
        start = _checkpoint_step(checkpoint) if isinstance(checkpoint, str) else None
        output = super().train(resume_from_checkpoint, *args, **kwargs)
        if start is not None and self.state.global_step == start and start >= self.state.max_steps:
            message = (
                f"Nothing to train: {checkpoint} is at step {start} and the run ends at step {self.state.max_steps}. "
                "Its weights, optimizer and trainer state were restored; raise max_steps (or num_train_epochs) to "
                "train further."
            )
            logger.warning(message)
        return output

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # Replaces: transformers' unconverted, non-strict load of full weights, and its warning-only adapter load.
        model = self.model if model is None else model
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        from transformers import PreTrainedModel

        if _has_full_weights(resume_from_checkpoint) and isinstance(model, PreTrainedModel):
            logger.info("Loading the model weights from %s.", resume_from_checkpoint)
            load_checkpoint_weights(model, resume_from_checkpoint)
            return None
        single_adapter = any(os.path.isfile(os.path.join(resume_from_checkpoint, n)) for n in ADAPTER_FILES)
        if single_adapter and hasattr(model, "load_adapter") and len(getattr(model, "active_adapters", ())) == 1:
            logger.info("Loading the adapter weights from %s.", resume_from_checkpoint)
            _load_adapter_exactly(model, resume_from_checkpoint)
            return None
        return super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        # Replaces: the same unconverted, non-strict read of full weights for `load_best_model_at_end`.
        best = self.state.best_model_checkpoint
        if not (self.is_fsdp_enabled or self.is_deepspeed_enabled) and _has_full_weights(best):
            from transformers import PreTrainedModel

            if isinstance(self.model, PreTrainedModel):
                logger.info("Loading the best model from %s (score: %s).", best, self.state.best_metric)
                load_checkpoint_weights(self.model, best)
                return None
        return super()._load_best_model()

    def _run_epoch(self, *args, **kwargs):
        # Adds: no step at or past max_steps. transformers checks max_steps only after a step, so a run resumed at
        # its last step inside an epoch would train one more.
        if self.state.global_step >= self.state.max_steps > 0:
            return None
        return super()._run_epoch(*args, **kwargs)
