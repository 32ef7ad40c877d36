"""The model as the training scripts prepare it: precision rules, the vision tower, where LoRA adapters go.

Every trainable weight keeps its optimiser update at the recipes' learning rates.

A model loaded in bfloat16 trains badly at the learning rates of the recipes (1e-6 full fine-tuning, 1e-5 LoRA): an
Adam step is about `lr` in size, while the spacing of bfloat16 numbers near a typical weight of 0.02 is 1.2e-4, so
the update rounds back to the old value. Measured on Qwen2.5-VL-7B at lr 1e-6, about 98% of the elements of a
weight never moved.

The rule this package applies (`keep_updates`), before the optimiser is built:

- trainable tensors in bfloat16 or float16 are upcast to float32 (they are the master weights the optimiser updates);
  frozen weights (the base of LoRA, the 4-bit base of QLoRA, a frozen vision tower, the reference model) stay in their
  low-precision dtype;
- compute runs under the trainer's mixed-precision autocast (`bf16: true` / `fp16: true`), so matmuls still run in
  bfloat16: the cost is the memory of float32 trainable weights, their gradients and their optimiser states;
- under DeepSpeed nothing is upcast: its bf16/fp16 engine already keeps float32 master weights and optimiser states;
- FSDP2 (accelerate, mixed precision on) holds the upcast weights as its float32 shards and gathers them in bfloat16.

A user can keep the weights as loaded (`trainable_dtype="model"`); when that would lose updates at the configured
learning rate, or when a setting would cast the weights back to low precision during training, `PrecisionError`
says so before anything expensive starts, and names the fix.

Example:
    ```python
    from videorft_hf.modeling import keep_updates

    trainer = SFTTrainer(model=model_in_bf16, args=SFTConfig(bf16=True, learning_rate=1e-6, ...), ...)
    keep_updates(trainer.model, trainer.args)   # videorft sft and VideoGRPOTrainer do this themselves
    trainer.train()
    ```
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "LOW_PRECISION_DTYPES",
    "TRAINABLE_DTYPES",
    "PrecisionError",
    "freeze_vision_tower",
    "keep_updates",
    "lost_update_fraction",
    "model_structure",
    "peft_config_for",
    "vision_tower_name",
]

LOW_PRECISION_DTYPES = (torch.bfloat16, torch.float16)
TRAINABLE_DTYPES = ("float32", "model")
# A weight that keeps fewer than this share of its updates is a weight that does not train.
_MAX_LOST_FRACTION = 0.1
# Elements per tensor that the lost-update estimate looks at (a strided sample of larger tensors).
_SAMPLE_ELEMENTS = 1 << 20


class PrecisionError(ValueError):
    """A training configuration would round the optimiser's updates away (or cast the master weights down)."""


def lost_update_fraction(tensor: torch.Tensor, step: float) -> float:
    """Share of the elements of `tensor` that a change of size `step` leaves unchanged once rounded to its dtype.

    An element `w` keeps a change `d` only when `|d|` is at least half the spacing of its dtype at `w`; the spacing is
    `eps * 2**floor(log2|w|)`. Zeros always keep it. Tensors above about a million elements are sampled with a stride.

    Args:
        tensor: a floating-point tensor (a weight).
        step: the size of the change, e.g. the learning rate (Adam's first steps are about `lr` in size).

    Returns:
        A fraction in [0, 1].

    Example:
        >>> w = torch.full((4,), 0.02, dtype=torch.bfloat16)
        >>> lost_update_fraction(w, 1e-6), lost_update_fraction(w.float(), 1e-6)
        (1.0, 0.0)
    """
    values = tensor.detach().reshape(-1)
    if values.numel() > _SAMPLE_ELEMENTS:
        values = values[:: values.numel() // _SAMPLE_ELEMENTS + 1]
    eps = torch.finfo(values.dtype).eps
    _, exponent = torch.frexp(values.float())  # |w| = m * 2**e with m in [0.5, 1): floor(log2|w|) = e - 1
    half_spacing = eps * torch.exp2(exponent.float() - 1) / 2
    lost = (half_spacing > abs(step)) & (values != 0)
    return lost.float().mean().item() if values.numel() else 0.0


def _trainable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad and p.is_floating_point()]


def _uses_deepspeed(args) -> bool:
    return getattr(args, "deepspeed_plugin", None) is not None or bool(getattr(args, "deepspeed", None))


def keep_updates(model: torch.nn.Module, args) -> list[str]:
    """Makes every trainable weight of `model` keep its optimiser updates; call it before the optimiser is built.

    With `args.trainable_dtype == "float32"` (the default, also for a plain trl config without the field), trainable
    tensors in bfloat16 or float16 are upcast to float32 in place (the same `Parameter` objects, so references held
    by the trainer stay valid); frozen tensors keep their dtype. Under DeepSpeed nothing is upcast (its engine keeps
    float32 master weights). With `trainable_dtype == "model"` the weights stay as loaded, provided they keep their
    updates at `args.learning_rate`.

    Args:
        model: the model about to be trained (a peft model included).
        args: the training arguments (`transformers.TrainingArguments` or a subclass).

    Returns:
        The names of the tensors that were upcast.

    Raises:
        PrecisionError: the configuration would lose updates: low-precision trainable weights that the learning rate
            cannot move (`trainable_dtype="model"`, or DeepSpeed without bf16/fp16), or trl's transformers continuous
            batching, which casts the whole model to bfloat16/float16 for every generation.

    Example:
        >>> from types import SimpleNamespace
        >>> layer = torch.nn.Linear(4, 4).to(torch.bfloat16)
        >>> keep_updates(layer, SimpleNamespace(learning_rate=1e-6))
        ['weight', 'bias']
        >>> layer.weight.dtype
        torch.float32
    """
    trainable_dtype = getattr(args, "trainable_dtype", "float32")
    if trainable_dtype not in TRAINABLE_DTYPES:
        raise PrecisionError(f"trainable_dtype must be one of {TRAINABLE_DTYPES}, got {trainable_dtype!r}.")
    mixed = getattr(args, "bf16", False) or getattr(args, "fp16", False)
    if getattr(args, "use_transformers_continuous_batching", False) and mixed:
        raise PrecisionError(
            "use_transformers_continuous_batching casts the whole policy to bfloat16/float16 before every generation, "
            "so the optimiser would update low-precision weights and lose most updates at small learning rates. Set "
            "use_transformers_continuous_batching=False (transformers generation) or use_vllm=True."
        )
    trainable = _trainable(model)
    low = [(name, p) for name, p in trainable if p.dtype in LOW_PRECISION_DTYPES]
    if not low:
        return []
    if _uses_deepspeed(args):
        if not mixed:
            raise PrecisionError(
                f"DeepSpeed trains the {len(low)} {low[0][1].dtype} trainable tensors as they are without bf16 or "
                "fp16 mixed precision, and loses most updates at small learning rates. Set bf16: true (DeepSpeed "
                "then keeps float32 master weights) or load the model in float32."
            )
        return []  # DeepSpeed's bf16/fp16 engine keeps float32 master weights and optimiser states
    if trainable_dtype == "model":
        learning_rate = float(getattr(args, "learning_rate", 0.0))
        lost = _lost_fraction(low, learning_rate)
        if lost > _MAX_LOST_FRACTION:
            raise PrecisionError(
                f"trainable_dtype='model' keeps {len(low)} trainable tensors in {low[0][1].dtype}, where a step of "
                f"learning_rate={learning_rate:g} is below half the spacing of {lost:.0%} of their elements: those "
                "updates would round away. Set trainable_dtype='float32' (the default: float32 master weights, "
                "bf16 compute), or use DeepSpeed with bf16."
            )
        return []
    for _, parameter in low:
        parameter.data = parameter.data.float()
    elements = sum(p.numel() for _, p in low)
    logger.info(
        "Upcast %d trainable tensors (%.1fM parameters) to float32 so that they keep their updates; frozen weights "
        "keep their dtype.",
        len(low),
        elements / 1e6,
    )
    return [name for name, _ in low]


def _lost_fraction(named: list[tuple[str, torch.nn.Parameter]], step: float) -> float:
    """Element-weighted share of lost updates over `named` tensors."""
    total = sum(p.numel() for _, p in named)
    return sum(lost_update_fraction(p, step) * p.numel() for _, p in named) / max(total, 1)


def vision_tower_name(model) -> str | None:
    """Name of the submodule that is the model's vision tower: the outermost one configured by its `vision_config`.

    Found from the config, never from a module-name pattern: `"model.visual"` for Qwen2/2.5/3-VL in transformers 5.

    Args:
        model: a vision-language model (or a peft model around one).

    Returns:
        The module name, or None when the model has no `vision_config`.

    Example:
        >>> from videorft_hf.testing import build_tiny_vlm
        >>> vision_tower_name(build_tiny_vlm("qwen2_5_vl")[0])
        'model.visual'
    """
    vision_config = getattr(model.config, "vision_config", None)
    if vision_config is None:
        return None
    for name, module in model.named_modules():
        if name and getattr(module, "config", None) is vision_config:
            return name
    return None


def freeze_vision_tower(model) -> str:
    """Turns off the gradients of the vision tower (and its merger); returns its module name.

    Raises:
        ValueError: the model has no `vision_config` to find its tower by.
    """
    tower = vision_tower_name(model)
    if tower is None:
        raise ValueError("freeze_vision_tower is set, but the model has no `vision_config` to find its tower by.")
    for parameter in model.get_submodule(tower).parameters():
        parameter.requires_grad_(False)
    logger.info("Froze the vision tower %s.", tower)
    return tower


def peft_config_for(model_args, model, freeze_vision_tower: bool):
    """trl's LoRA config from `ModelConfig`, targeting every linear layer (vision tower included) unless
    `lora_target_modules` says otherwise, and none inside the vision tower when `freeze_vision_tower`.

    Args:
        model_args: trl's `ModelConfig` (`use_peft`, `lora_r`, `lora_target_modules`, ...).
        model: the model the adapters go into (its vision tower is found from its config), or its
            `model_structure`; None for a text model.
        freeze_vision_tower: place no adapter in the vision tower.

    Returns:
        A `peft.LoraConfig`, or None without `--use_peft`.

    Example:
        >>> from trl import ModelConfig
        >>> from videorft_hf.testing import build_tiny_vlm
        >>> config = peft_config_for(ModelConfig(use_peft=True), build_tiny_vlm("qwen2_5_vl")[0], True)
        >>> config.target_modules, config.exclude_modules
        ('all-linear', 'model\\\\.visual(\\\\..*)?')
    """
    import re

    from trl import get_peft_config

    peft_config = get_peft_config(model_args)
    if peft_config is None:
        return None
    targets = peft_config.target_modules
    if not targets or (not isinstance(targets, str) and set(targets) == {"all-linear"}):
        peft_config.target_modules = "all-linear"
    if freeze_vision_tower:
        tower = vision_tower_name(model) if model is not None else None
        if tower is not None:
            peft_config.exclude_modules = rf"{re.escape(tower)}(\..*)?"
    return peft_config


def model_structure(model_name_or_path: str, model_args=None):
    """The model of a checkpoint built on the meta device: its module tree, without weights or memory.

    Used to place adapters by the model's structure (its vision tower, say) before the trainer loads the weights.

    Args:
        model_name_or_path: a checkpoint folder or Hub model id.
        model_args: trl's `ModelConfig` (its `model_revision` and `trust_remote_code` are used).

    Returns:
        The model on the meta device, or None for a model without a `vision_config`.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(
        model_name_or_path,
        revision=getattr(model_args, "model_revision", None),
        trust_remote_code=getattr(model_args, "trust_remote_code", False),
    )
    if getattr(config, "vision_config", None) is None:
        return None  # a text model: no tower to place adapters by
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config)
