"""The model: loading a checkpoint (or a base model with an adapter merged in), merging adapters, precision rules,
the vision tower and where LoRA adapters go.

Loading (the one place the package calls `from_pretrained` on a model):

- `load_training_model`: the SFT script's model, loaded as `trl.SFTTrainer` loads a model id (dtype, device map,
  quantization, attention implementation from trl's `ModelConfig`).
- `load_model` / `load_model_and_processor`: a checkpoint for generation (`videorft eval`, the curation backend):
  an image-text-to-text model with its processor or a causal LM with its tokenizer, an adapter merged in, in eval
  mode on one device.
- `merge_adapter`: a base model with a LoRA adapter merged into its weights, saved as a plain checkpoint (for vLLM
  and for `videorft push --kind merged`).

Models loaded here compute M-RoPE positions by Qwen's rule (`videorft_hf.internals.apply_position_rule`).

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

import json
import logging
import os
from typing import Any

import torch

from .internals import apply_position_rule
from .jsonl import write_json

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_DTYPE",
    "LOW_PRECISION_DTYPES",
    "TRAINABLE_DTYPES",
    "PrecisionError",
    "freeze_vision_tower",
    "keep_updates",
    "load_model",
    "load_model_and_processor",
    "load_training_model",
    "lost_update_fraction",
    "merge_adapter",
    "model_structure",
    "peft_config_for",
    "torch_dtype",
    "vision_tower_name",
]

LOW_PRECISION_DTYPES = (torch.bfloat16, torch.float16)
# The `dtype` of `load_model` / `merge_adapter` that keeps the dtype the weights were saved in (transformers' "auto").
CHECKPOINT_DTYPE = "checkpoint"
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


def keep_updates(model: torch.nn.Module, args, trainable_dtype: str | None = None) -> list[str]:
    """Makes every trainable weight of `model` keep its optimiser updates; call it before the optimiser is built.

    With `args.trainable_dtype == "float32"` (the default, also for a plain trl config without the field), trainable
    tensors in bfloat16 or float16 are upcast to float32 in place (the same `Parameter` objects, so references held
    by the trainer stay valid); frozen tensors keep their dtype. Under DeepSpeed nothing is upcast (its engine keeps
    float32 master weights). With `trainable_dtype == "model"` the weights stay as loaded, provided they keep their
    updates at `args.learning_rate`.

    Args:
        model: the model about to be trained (a peft model included).
        args: the training arguments (`transformers.TrainingArguments` or a subclass).
        trainable_dtype: the run's resolved `trainable_dtype` (`RunSettings.precision`); None reads it from `args`.

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
    if trainable_dtype is None:
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


# --------------------------------------------------------------------------------------------- loading
def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype a `--dtype` value of the inference commands names: "auto" is bfloat16 on a GPU, float32 on CPU.

    Args:
        name: "auto" or a torch dtype name ("bfloat16", "float16", "float32").

    Returns:
        The dtype.

    Raises:
        ValueError: the name is not a torch dtype.

    Example:
        >>> torch_dtype("bfloat16")
        torch.bfloat16
    """
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"Unknown dtype {name!r}; use 'auto', 'bfloat16', 'float16' or 'float32'.")
    return dtype


def _generation_class(config):
    """The auto class that loads a checkpoint for generation: image-text-to-text when transformers maps its model
    type to one, else a causal LM."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from .internals import image_text_to_text_model_types

    if config.model_type in image_text_to_text_model_types():
        return AutoModelForImageTextToText
    return AutoModelForCausalLM


def _is_vision_language(model_name_or_path: str) -> bool:
    from transformers import AutoConfig, AutoModelForImageTextToText

    return _generation_class(AutoConfig.from_pretrained(model_name_or_path)) is AutoModelForImageTextToText


def load_model(
    model_name_or_path: str,
    adapter_path: str | None = None,
    dtype: str = "auto",
    device: str | None = None,
    attn_implementation: str | None = None,
):
    """Loads a checkpoint for generation, with a LoRA adapter merged in when given.

    A vision-language checkpoint (its model type maps to `AutoModelForImageTextToText`) loads as one, anything else
    as `AutoModelForCausalLM`.

    Args:
        model_name_or_path: checkpoint folder or Hub id (the base model when `adapter_path` is set).
        adapter_path: a peft adapter folder (e.g. a trl LoRA run's output); it is merged into the weights.
        dtype: "auto" (bfloat16 on GPU, float32 on CPU), `CHECKPOINT_DTYPE` (the dtype the weights were saved in) or
            a torch dtype name.
        device: where to put the model (default: "cuda" when available, else "cpu").
        attn_implementation: forwarded to `from_pretrained`.

    Returns:
        The model, in eval mode on `device`, computing M-RoPE positions by Qwen's rule (`apply_position_rule`).

    Example:
        >>> model = load_model("out/sft", dtype="bfloat16", device="cuda")  # doctest: +SKIP
    """
    from transformers import AutoConfig

    kwargs: dict[str, Any] = {"dtype": "auto" if dtype == CHECKPOINT_DTYPE else torch_dtype(dtype)}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model_class = _generation_class(AutoConfig.from_pretrained(model_name_or_path))
    model = model_class.from_pretrained(model_name_or_path, **kwargs)
    if adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path).merge_and_unload()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return apply_position_rule(model.to(device).eval())


def load_model_and_processor(
    model_name_or_path: str,
    adapter_path: str | None = None,
    dtype: str = "auto",
    device: str | None = None,
    attn_implementation: str | None = None,
):
    """Loads a checkpoint for generation (see `load_model`) with its processor: the `AutoProcessor` of a
    vision-language checkpoint, the `AutoTokenizer` of a text-only one.

    Args:
        model_name_or_path, adapter_path, dtype, device, attn_implementation: as `load_model`.

    Returns:
        `(model, processor)`, the model in eval mode. The processor is the base checkpoint's.

    Example:
        >>> from videorft_hf.testing import save_tiny_vlm
        >>> model, processor = load_model_and_processor(save_tiny_vlm("qwen2_5_vl", "tiny"), device="cpu")  # doctest: +SKIP
    """
    from transformers import AutoProcessor, AutoTokenizer

    processor_class = AutoProcessor if _is_vision_language(model_name_or_path) else AutoTokenizer
    processor = processor_class.from_pretrained(model_name_or_path)
    return load_model(model_name_or_path, adapter_path, dtype, device, attn_implementation), processor


def merge_adapter(
    model_name_or_path: str,
    adapter_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    dtype: str = CHECKPOINT_DTYPE,
    save_processor: bool = True,
) -> str:
    """Writes the base model with a LoRA adapter merged into its weights to `output_path`, once.

    The result is a plain checkpoint: vLLM serves it (merging also covers adapters on vision-tower layers, which
    vLLM's LoRA path does not), and `videorft push --kind merged` publishes it. The merge runs on CPU. A finished
    merge is marked by `merged.json` (the base model and the adapter's absolute path) and reused.

    Args:
        model_name_or_path: the base model (folder or Hub id).
        adapter_path: the peft adapter folder.
        output_path: the folder to write.
        dtype: the merged weights' dtype: `CHECKPOINT_DTYPE` (the base checkpoint's), "auto" or a torch dtype name.
        save_processor: also save the base model's processor (or tokenizer) there.

    Returns:
        `output_path` as a string.

    Example:
        >>> merge_adapter("Qwen/Qwen2.5-VL-7B-Instruct", "out/lora", "out/merged", dtype="bfloat16")  # doctest: +SKIP
        'out/merged'
    """
    output_path = os.fspath(output_path)
    marker = os.path.join(output_path, "merged.json")
    source = {"model_name_or_path": model_name_or_path, "adapter_path": os.path.abspath(adapter_path)}
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as stream:
            if json.load(stream) == source:
                return output_path
    logger.info("Merging the adapter of %s into %s", adapter_path, model_name_or_path)
    if save_processor:
        model, processor = load_model_and_processor(model_name_or_path, os.fspath(adapter_path), dtype, "cpu")
    else:
        model, processor = load_model(model_name_or_path, os.fspath(adapter_path), dtype, "cpu"), None
    os.makedirs(output_path, exist_ok=True)
    model.save_pretrained(output_path)
    if processor is not None:
        processor.save_pretrained(output_path)
    write_json(marker, source)
    return output_path


def _training_class(model_name_or_path: str, trust_remote_code: bool):
    """The class `trl.SFTTrainer` loads a model id with (trl's `create_model_from_path`): the architecture the
    checkpoint's config names; for remote code, the most specific auto class its `auto_map` declares."""
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    architecture = getattr(transformers, config.architectures[0], None)
    if architecture is not None:
        return architecture
    auto_map = config.auto_map or {}
    for candidate in (AutoModelForImageTextToText, AutoModelForCausalLM):
        if candidate.__name__ in auto_map:
            return candidate
    return AutoModelForCausalLM


def load_training_model(model_args, training_args):
    """Loads the model of a training run as `trl.SFTTrainer` loads a model id, with 4-bit / 8-bit quantization from
    `ModelConfig`.

    As trl: `dtype` "auto" (the checkpoint's), None or a dtype name; the architecture the checkpoint's config names.
    A quantized model is loaded on this process's own device (it cannot be moved afterwards); under DDP or DeepSpeed
    nothing is dispatched (`device_map=None`); otherwise `device_map="auto"` on an accelerator and None on CPU.

    Args:
        model_args: trl's `ModelConfig` (`model_name_or_path`, `model_revision`, `attn_implementation`, `dtype`, the
            quantization flags).
        training_args: the training config (`trust_remote_code`, `distributed_state`; its `model_init_kwargs` are
            added last and win).

    Returns:
        The model (e.g. `Qwen2_5_VLForConditionalGeneration` for a Qwen2.5-VL checkpoint), computing M-RoPE
        positions by Qwen's rule (`apply_position_rule`).

    Raises:
        ValueError: a `dtype` that is neither "auto" nor a float dtype name.
    """
    import transformers
    from accelerate import PartialState
    from packaging.version import Version
    from trl import get_quantization_config

    kwargs: dict[str, Any] = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        state = PartialState()
        # A quantized model cannot be moved after loading: load it on this process's own device.
        kwargs["device_map"] = None if state.device.type == "cpu" else {"": state.local_process_index}
    elif training_args.distributed_state.distributed_type in ("MULTI_GPU", "DEEPSPEED"):
        kwargs["device_map"] = None  # as SFTTrainer: "auto" fails under distributed training
    kwargs.update(training_args.model_init_kwargs or {})

    dtype = kwargs.get("dtype", "float32")
    if isinstance(dtype, str) and dtype in ("bfloat16", "float16", "float32"):
        kwargs["dtype"] = getattr(torch, dtype)
    elif not (isinstance(dtype, torch.dtype) or dtype == "auto" or dtype is None):
        raise ValueError(
            "Invalid `dtype` passed to the config. Expected either 'auto' or a string representing a valid "
            f"`torch.dtype` (e.g., 'float32'), but got {dtype}."
        )
    # transformers 5.2/5.3 pin a kernels<0.11 that fails to load the Hub kernels (fixed in 5.4.0)
    if kwargs.get("use_kernels") and Version("5.2.0") <= Version(transformers.__version__) < Version("5.4.0"):
        raise ValueError(
            "`use_kernels=True` requires transformers>=5.4.0: 5.2.0 and 5.3.0 fail to load the Hub kernels."
        )
    if "device_map" not in kwargs:
        # On CPU (use_cpu=True) "auto" would still dispatch to a GPU; on MPS it fails casting bf16 weights.
        kwargs["device_map"] = None if PartialState().device.type in ("cpu", "mps") else "auto"
    model_class = _training_class(model_args.model_name_or_path, kwargs.get("trust_remote_code", False))
    model = model_class.from_pretrained(model_args.model_name_or_path, **kwargs)
    if Version(transformers.__version__) == Version("5.3.0"):
        model.tie_weights()  # 5.3.0 leaves remote-code tied embeddings on the meta device
    return apply_position_rule(model)
