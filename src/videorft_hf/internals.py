"""Where this package reaches into transformers' internals: every patch of a library object lives here.

`tests/test_trl_seams.py` lists each transformers name used here, with the parameters this code expects of it, so
that a transformers release that changes one fails there with a message naming it.

The position rule (`apply_position_rule`). Qwen-VL models compute their M-RoPE positions in the inner model's
`get_rope_index` (`Qwen2_5_VLModel.get_rope_index` and its siblings): its forward calls it when no `position_ids`
are passed, and generation calls it (through `model.model.get_rope_index`) before the first step and stores its
`rope_deltas` for the decode steps. transformers 5.3 to 5.25 start the text after a Qwen2/2.5-VL video at the wrong
position and 5.0 to 5.17 truncate the seconds per temporal grid (`videorft_hf.positions`), so the package replaces
that method, on the model instance only, with Qwen's rule (`videorft_hf.positions.rope_index`): every forward and
generation of the model, transformers' own included, then uses it. Being an instance attribute (a bound method), the
replacement:

- follows the model through peft wrapping and merging, DDP wrapping and `copy.deepcopy` (the method is rebound to
  the copy) (`tests/test_positions.py`), and FSDP and DeepSpeed wrapping (they keep the inner model object);
- leaves `state_dict()` and saved checkpoints unchanged (it is neither a parameter nor a buffer), and other model
  instances of the same class untouched;
- accepts the arguments of every transformers 5.x signature (5.0-5.2 pass grids positionally, without
  `mm_token_type_ids`; 5.3+ pass `mm_token_type_ids` second), read off the class's own method;
- returns deltas in the convention of the installed version's decoding (`deltas_from_padded_length`).

Example:
    ```python
    from videorft_hf import apply_position_rule

    model = AutoModelForImageTextToText.from_pretrained("Qwen/Qwen2.5-VL-7B-Instruct", dtype=torch.bfloat16)
    apply_position_rule(model)  # before building your SFTTrainer / calling generate; idempotent
    ```

The suppressed vision placeholders (`biased_log_probs`). A rollout must never sample an image or video placeholder
token (its completion would then hold a vision token without features), so generation adds `SUPPRESSED_LOGIT_BIAS`
to their logits (vLLM's `logit_bias`; transformers' `suppress_tokens` sets them to -inf, which differs by e^-100).
The distribution a rollout is sampled from is therefore the model's with those tokens removed, and it is the one vLLM
reports log-probs of (trl asks for `processed_logprobs`). The trainer's log-prob passes score that same distribution:
while `biased_log_probs` is entered, trl's fused LM head (`trl.trainer.utils._ChunkedLogProbFunction`, through which
every `GRPOTrainer` log-prob pass goes) adds the same bias to the same logits, so that the importance ratio between
the trainer and vLLM, the policy ratio and the KL all compare one distribution. (With a pretrained model the
placeholders carry almost no probability and nothing changes; with a random one they can carry much.)
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from .positions import POSITION_RULE_MODEL_TYPES, PositionRule, rope_index

__all__ = [
    "GET_ROPE_INDEX_PARAMETERS",
    "SUPPRESSED_LOGIT_BIAS",
    "apply_position_rule",
    "biased_log_probs",
    "deltas_from_padded_length",
    "has_position_rule",
    "rope_models",
    "set_decode_deltas",
]

# The parameters of `get_rope_index` the replacement understands (the union over transformers 5.0-5.25); anything
# else a version passes lands in `kwargs` and is ignored, as transformers ignores it.
GET_ROPE_INDEX_PARAMETERS = frozenset(
    {
        "self",
        "input_ids",
        "mm_token_type_ids",
        "image_grid_thw",
        "video_grid_thw",
        "second_per_grid_ts",
        "attention_mask",
        "kwargs",
    }
)


@functools.cache
def deltas_from_padded_length() -> bool:
    """Whether the installed transformers decodes at `cache length + rope_deltas` (5.0, 5.1) rather than at
    `index among the real tokens + rope_deltas` (5.2 and later), which decides what `rope_deltas` must hold."""
    import transformers
    from packaging.version import Version

    return Version(transformers.__version__) < Version("5.2.0")


@functools.cache
def _parameter_names(cls: type) -> tuple[str, ...]:
    """Names of the positional parameters of `cls.get_rope_index` after `self`, in order."""
    parameters = list(inspect.signature(cls.get_rope_index).parameters.values())[1:]
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in parameters if p.kind in kinds)


def _rule_get_rope_index(self, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """`get_rope_index` by Qwen's rule, called as the installed transformers calls the original."""
    names = _parameter_names(type(self))
    if len(args) > len(names):
        raise TypeError(f"get_rope_index takes {len(names)} positional arguments, got {len(args)}.")
    arguments = dict(zip(names, args, strict=False))  # trailing parameters may come by keyword
    for name, value in kwargs.items():
        if name in arguments:
            raise TypeError(f"get_rope_index got multiple values for argument {name!r}.")
        arguments[name] = value
    input_ids = arguments.get("input_ids")
    if input_ids is None:
        raise ValueError("M-RoPE positions need input_ids (the vision placeholder tokens mark the vision blocks).")
    return rope_index(
        PositionRule.from_config(self.config),
        input_ids,
        arguments.get("attention_mask"),
        image_grid_thw=arguments.get("image_grid_thw"),
        video_grid_thw=arguments.get("video_grid_thw"),
        second_per_grid_ts=arguments.get("second_per_grid_ts"),
        mm_token_type_ids=arguments.get("mm_token_type_ids"),
        deltas_from_padded_length=deltas_from_padded_length(),
    )


def rope_models(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The Qwen-VL models inside `model` (through peft, DDP, FSDP and DeepSpeed wrappers) that compute M-RoPE
    positions: the modules whose class defines `get_rope_index` and whose config's model type the rule covers."""
    return [
        module
        for module in model.modules()
        if callable(getattr(type(module), "get_rope_index", None))
        and getattr(getattr(module, "config", None), "model_type", None) in POSITION_RULE_MODEL_TYPES
    ]


def _has_rule(module: torch.nn.Module) -> bool:
    method = vars(module).get("get_rope_index")
    return getattr(method, "__func__", None) is _rule_get_rope_index


def apply_position_rule(model: torch.nn.Module) -> torch.nn.Module:
    """Makes every forward and generation of a Qwen2-VL, Qwen2.5-VL or Qwen3-VL model use Qwen's M-RoPE rule.

    The inner model's `get_rope_index` is replaced on the instance by `videorft_hf.positions.rope_index` (see the
    module docstring): transformers' forward, `generate` (its decode steps included) and any trainer built on the
    model then place tokens as the pretrained model and vLLM do, whatever transformers 5.x is installed. Weights,
    `state_dict()` and saved checkpoints are unchanged. Other model types are left as they are. `videorft sft`,
    `videorft eval`, the curation backend and `VideoGRPOTrainer` (policy and reference model) call it themselves;
    call it on a model you give your own `trl.SFTTrainer` (with `DataCollatorForVideoLanguageModeling`) or generate
    with yourself.

    Args:
        model: a model, possibly wrapped by peft, DDP, FSDP or DeepSpeed. Calling it again does nothing.

    Returns:
        `model`, for chaining.

    Example:
        >>> from videorft_hf.testing import build_tiny_vlm
        >>> model, processor = build_tiny_vlm("qwen2_5_vl")
        >>> has_position_rule(apply_position_rule(model))
        True
    """
    for module in rope_models(model):
        if not _has_rule(module):
            module.get_rope_index = types.MethodType(_rule_get_rope_index, module)
    return model


def has_position_rule(model: torch.nn.Module) -> bool:
    """Whether `model` holds a Qwen-VL model and every one of them computes positions by Qwen's rule."""
    found = rope_models(model)
    return bool(found) and all(_has_rule(module) for module in found)


def set_decode_deltas(model: torch.nn.Module, deltas: torch.Tensor) -> None:
    """Stores `deltas` `(batch, 1)` as the `rope_deltas` the decode steps of the next `generate` continue from (for a
    generation that starts from a KV cache filled outside `generate`).

    Args:
        model: a Qwen-VL model, possibly wrapped.
        deltas: one delta per row, from `videorft_hf.positions.rope_index` with `deltas_from_padded_length()`.
    """
    for module in rope_models(model):
        module.rope_deltas = deltas


# ------------------------------------------------------------------------------------------ suppressed placeholders
SUPPRESSED_LOGIT_BIAS = -100.0  # vLLM's logit_bias for a token never to sample (its own limit is +-100)


@contextmanager
def biased_log_probs(token_ids: Sequence[int], bias: float = SUPPRESSED_LOGIT_BIAS) -> Iterator[None]:
    """While entered, the log-probs (and entropies) trl's fused LM head computes are those of the logits with `bias`
    added at `token_ids`: the distribution generation samples from when it suppresses those tokens (module docstring).

    Args:
        token_ids: the suppressed tokens (the model's image and video placeholders). None: nothing changes.
        bias: added to their logits before temperature, as vLLM adds `logit_bias`.

    Example:
        >>> with biased_log_probs([video_token_id, image_token_id]):  # doctest: +SKIP
        ...     logps, entropies = trainer._get_per_token_logps_and_entropies(model, ids, mask, keep)[:2]
    """
    token_ids = sorted(set(token_ids))
    if not token_ids:
        yield
        return
    from trl.trainer import utils as trl_utils

    original = trl_utils._ChunkedLogProbFunction

    class Biased:
        @staticmethod
        def apply(hidden, weight, lm_head_bias, *args):
            # DeepSpeed ZeRO-3 hands the head's weight over partitioned (its full shape in `ds_shape`).
            vocab = getattr(weight, "ds_shape", weight.shape)[0]
            added = torch.zeros(vocab, dtype=torch.float32, device=hidden.device)
            added[token_ids] = bias
            if lm_head_bias is not None:
                added = lm_head_bias + added
            else:
                _mark_gathered(added)
            return original.apply(hidden, weight, added, *args)

    trl_utils._ChunkedLogProbFunction = Biased
    try:
        yield
    finally:
        trl_utils._ChunkedLogProbFunction = original


def _mark_gathered(tensor: torch.Tensor) -> None:
    """Under DeepSpeed ZeRO-3, trl's fused head gathers its weight and bias (`maybe_gather_lm_head_ctx`), reading each
    one's `ds_status`; a constant bias is never partitioned, so it says it is available."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

        tensor.ds_status = ZeroParamStatus.AVAILABLE
