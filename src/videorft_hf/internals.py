"""The package's one fence around library internals: every private name of trl, transformers, torch, peft,
bitsandbytes and accelerate the package uses, and every swap or patch of a library object, is in this module.

The rule, enforced by `tests/test_trl_seams.py` (an AST scan of `src/`): outside this module no module of the
package reads, writes, calls or imports a private library name (`obj._name`, `getattr(obj, "_name")`, `from lib
import _name`, a name the package does not define itself), imports from a library module that is not public (trl's
and transformers' modules other than the few the test lists as public, such as `transformers.trainer_utils`), or
patches a library object (assigns or deletes an attribute of an imported module, of an object it did not create, or
of a library object a trainer holds; `setattr`/`delattr`/`vars` on anything but `self`). The one exception: the
package's trainer subclasses override trl's and transformers' named seam methods (`GRPOTrainer._tokenize_prompts`,
`Trainer._load_from_checkpoint`, ... listed in the test) and call the same seam through `super()`. Each name used
here is listed in that test with what the code expects of it (a signature, an attribute set by the class, a module
attribute), so that a release that changes one fails there with a message naming it; a name this module no longer
uses cannot stay listed. What the functions here do is library-version aware where the supported transformers range
(`pyproject.toml`: 5.15 to 5.25) differs (the KV cache's keyword, the repetition penalty's padding).

Sections: the M-RoPE position rule; the suppressed vision placeholders; trl's `GRPOTrainer` (its metrics, columns,
tags, tools per environment, row shuffle, reward call and generation settings); trl's vLLM generation; transformers'
weight conversion (exact resume); transformers' KV caches and attention (prompt sharing); the rollout engine's
internals of transformers, torch, peft and bitsandbytes.

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

import copy
import functools
import inspect
import re
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from .positions import POSITION_RULE_MODEL_TYPES, PositionRule, rope_index

if TYPE_CHECKING:  # the annotations of trl's GRPOTrainer.__init__, which VideoGRPOTrainer's signature repeats
    from trl.trainer.grpo_trainer import EnvironmentFactory as EnvironmentFactory
    from trl.trainer.grpo_trainer import RewardFunc as RewardFunc
    from trl.trainer.grpo_trainer import RolloutFunc as RolloutFunc

__all__ = [
    "GET_ROPE_INDEX_PARAMETERS",
    "SUPPRESSED_LOGIT_BIAS",
    "apply_position_rule",
    "attention_implementation",
    "biased_log_probs",
    "cache_states",
    "call_reward_functions",
    "decoder_call",
    "deltas_from_padded_length",
    "dense_weight",
    "expanded_cache_argument",
    "forward_cache",
    "generate_replaced",
    "generation_defaults",
    "has_fused_lm_head",
    "has_position_rule",
    "ignored_on_save",
    "image_text_to_text_model_types",
    "is_vlm",
    "keep_quantized_layout",
    "keep_signature_column",
    "language_model",
    "log_metric",
    "lora_delta",
    "lora_layers",
    "lora_merge_problem",
    "mark_static",
    "prompt_tools",
    "repetition_penalty_processor",
    "replace_model_card",
    "replace_submodule",
    "rope_models",
    "row_shuffle",
    "set_decode_deltas",
    "set_hub_tags",
    "suppressed_tokens",
    "vllm_generation_patched",
    "weight_conversions",
    "weights_in_model_names",
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


# ------------------------------------------------------------------------------------------- trl's GRPOTrainer
def is_vlm(trainer) -> bool:
    """Whether trl's trainer took its processing class for a vision-language processor (trl's `_is_vlm`)."""
    return bool(trainer._is_vlm)


def log_metric(trainer, name: str, value: float) -> None:
    """Appends `value` to the trainer's metric `name` of the current mode (train or eval), which trl averages and logs
    with its own metrics at the next logging step.

    Args:
        trainer: a trl `GRPOTrainer`.
        name: the metric, e.g. `"media/video_decodes"`.
        value: this batch's value.
    """
    mode = "train" if trainer.model.training else "eval"
    trainer._metrics[mode][name].append(value)


def keep_signature_column(trainer, column: str) -> None:
    """Keeps dataset `column` through `remove_unused_columns=True`: call it in `_set_signature_columns_if_needed`
    after trl's own (which keeps only the columns its model inputs name)."""
    if column not in trainer._signature_columns:
        trainer._signature_columns = [*trainer._signature_columns, column]


def set_hub_tags(target, tags: Sequence[str]) -> None:
    """Sets the tags trl's `create_model_card` and `push_to_hub` add, on a trainer class or on one trainer instance
    (an instance attribute shadows the class's list, which other trainers share)."""
    target._tag_names = list(tags)


def replace_model_card(trainer, create_model_card) -> None:
    """Makes `trainer.create_model_card` (which trl calls at each checkpoint and in `push_to_hub`) call
    `create_model_card(model_name=None, dataset_name=None, tags=None)` instead."""
    trainer.create_model_card = create_model_card


def prompt_tools(trainer, rows: Sequence[Mapping[str, Any]]) -> list[list | None]:
    """The tools each row's prompt is rendered with, as trl 1.16's `_tokenize_prompts` picks them: with an
    `environment_factory`, the tools of the row's environment (its standalone tools plus the environment's methods;
    with a dict of factories, the environment its `environment` column names, as trl picks `_batch_environments`);
    otherwise the trainer's tools. `None` where there are none (as trl: no tool boilerplate for `tools=[]`).

    Args:
        trainer: a trl `GRPOTrainer`.
        rows: the generation batch's dataset rows.
    """
    if getattr(trainer, "environment_factories", None) is None:
        return [trainer.tools or None] * len(rows)
    names = [row.get("environment") if trainer._multi_environment else None for row in rows]
    return [trainer._env_tools[name] or None for name in names]


@contextmanager
def row_shuffle(shuffle: Callable[[dict, Callable[[dict], dict]], dict]) -> Iterator[None]:
    """While entered, trl's row shuffle of a generation batch (`shuffle_sequence_dict`, called by
    `GRPOTrainer._prepare_inputs` before it cuts the micro-batches) is `shuffle(seq_dict, trl_shuffle)`.

    Args:
        shuffle: takes the batch dict and trl's own shuffle; returns the shuffled dict.
    """
    from trl.trainer import grpo_trainer

    original = grpo_trainer.shuffle_sequence_dict
    grpo_trainer.shuffle_sequence_dict = lambda seq_dict: shuffle(seq_dict, original)
    try:
        yield
    finally:
        grpo_trainer.shuffle_sequence_dict = original


@contextmanager
def generate_replaced(model: torch.nn.Module, generate: Callable[..., Any]) -> Iterator[None]:
    """While entered, `model.generate(**kwargs)` (as trl's generation calls it on the unwrapped model) returns
    `generate(**kwargs)`; inside that call `model.generate` is the model's own again, so `generate` may use it."""

    def replacement(*args, **kwargs):
        del model.generate
        try:
            return generate(*args, **kwargs)
        finally:
            model.generate = replacement

    model.generate = replacement
    try:
        yield
    finally:
        vars(model).pop("generate", None)


@contextmanager
def suppressed_tokens(trainer, token_ids: Sequence[int]) -> Iterator[None]:
    """While entered, trl's transformers generation (`generation_kwargs` and `generation_config`) never samples
    `token_ids`, on top of any tokens it already suppresses; both are restored on exit."""
    kwargs = trainer.generation_kwargs
    saved = {"suppress_tokens": kwargs["suppress_tokens"]} if "suppress_tokens" in kwargs else {}
    saved_config = trainer.generation_config.suppress_tokens
    tokens = sorted(set(trainer.generation_config.suppress_tokens or []) | set(token_ids))
    kwargs["suppress_tokens"] = trainer.generation_config.suppress_tokens = tokens
    try:
        yield
    finally:
        kwargs.pop("suppress_tokens", None)
        kwargs.update(saved)
        trainer.generation_config.suppress_tokens = saved_config


def call_reward_functions(trainer, indices: Sequence[int], inputs: list[dict], prompts: list, completions: list,
                          completion_ids: list) -> torch.Tensor:
    """trl's own reward call (`GRPOTrainer._calculate_rewards`: synchronous, asynchronous and model reward functions,
    every dataset column as a keyword argument) for some of the trainer's reward functions, on rows of this process
    only: nothing is gathered from other processes, logged to the completions table or to the metrics.

    Args:
        trainer: a trl `GRPOTrainer`.
        indices: which of `trainer.reward_funcs` to call.
        inputs: the rows (dataset columns), one per completion.
        prompts, completions, completion_ids: as trl passes them.

    Returns:
        `(rows, len(indices))` rewards (NaN where a function returned None).
    """
    from trl import GRPOTrainer
    from trl.trainer import grpo_trainer

    chosen = {
        "reward_funcs": [trainer.reward_funcs[i] for i in indices],
        "reward_processing_classes": [trainer.reward_processing_classes[i] for i in indices],
        "reward_func_names": [trainer.reward_func_names[i] for i in indices],
        "environments": None,  # the batch's environments belong to its own rows, not to these
        "_log_completion_extra": lambda *args, **kwargs: None,
        "_log_metric": lambda *args, **kwargs: None,
    }
    saved = {name: vars(trainer)[name] for name in chosen if name in vars(trainer)}
    gather = grpo_trainer.gather
    for name, value in chosen.items():
        setattr(trainer, name, value)
    grpo_trainer.gather = lambda tensor: tensor
    try:
        return GRPOTrainer._calculate_rewards(trainer, inputs, prompts, completions, completion_ids)
    finally:
        grpo_trainer.gather = gather
        for name in chosen:
            if name in saved:
                setattr(trainer, name, saved[name])
            else:
                delattr(trainer, name)


# ---------------------------------------------------------------------------------------- trl's vLLM generation
@contextmanager
def vllm_generation_patched(
    generation,
    *,
    wrap_llm: Callable[[Any], Any] | None = None,
    wrap_client: Callable[[Any], Any] | None = None,
    place_features: Callable[[dict | None, list[int]], dict | None] | None = None,
    logit_bias: Mapping[int, float] | None = None,
) -> Iterator[tuple[Any, Any]]:
    """trl's `VLLMGeneration` changed for one generation call, and restored on exit.

    While entered: in colocate mode `generation.llm` is `wrap_llm(llm)`; in server mode, on the process that talks
    to the server, `generation.vllm_client` is `wrap_client(client)` and `generation._place_features` (trl's placement
    of server-rendered features at the prompt ids) is `place_features`; `generation.generation_kwargs["logit_bias"]`
    holds `logit_bias` on top of any bias already there.

    Args:
        generation: a trainer's `vllm_generation`.
        wrap_llm, wrap_client, place_features, logit_bias: what to put in place (None: leave it).

    Yields:
        `(llm, client)`: the wrapped engine (colocate) and client (server), None where the mode has none.
    """
    kwargs = generation.generation_kwargs
    saved_bias = {"logit_bias": kwargs["logit_bias"]} if "logit_bias" in kwargs else {}
    llm = generation.llm if generation.mode == "colocate" else None
    client = getattr(generation, "vllm_client", None) if generation.mode == "server" else None
    if logit_bias:
        kwargs["logit_bias"] = {**(kwargs.get("logit_bias") or {}), **logit_bias}
    if llm is not None and wrap_llm is not None:
        generation.llm = wrap_llm(llm)
    if client is not None and wrap_client is not None:  # server mode: only the main process holds a client
        generation.vllm_client = wrap_client(client)
    if client is not None and place_features is not None:
        generation._place_features = place_features
    try:
        yield (generation.llm if llm is not None else None, generation.vllm_client if client is not None else None)
    finally:
        if llm is not None:
            generation.llm = llm
        if client is not None:
            generation.vllm_client = client
            if place_features is not None:
                del generation._place_features
        if logit_bias:
            kwargs.pop("logit_bias", None)
            kwargs.update(saved_bias)


# ------------------------------------------------------------------------------ transformers' weight conversion
def weight_conversions(model) -> list:
    """The weight conversions `save_pretrained` reverts when it writes this model (transformers'
    `revert_weight_conversion` picks them the same way): those `from_pretrained` used, else the model's default
    mapping without prefix changes. A deep copy: applying a transform marks it as used."""
    conversions = getattr(model, "_weight_conversions", None)
    if conversions is None:
        from transformers import core_model_loading
        from transformers.conversion_mapping import get_model_conversion_mapping

        prefix_change = getattr(core_model_loading, "PrefixChange", None)  # transformers >= 5.25
        conversions = [
            c for c in get_model_conversion_mapping(model, add_legacy=False)
            if prefix_change is None or not isinstance(c, prefix_change)
        ]
    return copy.deepcopy(list(conversions))


def weights_in_model_names(model, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict saved by `model.save_pretrained` (checkpoint names) with the model's own parameter names.

    The model's conversion mapping is applied as `from_pretrained` applies it: every renaming, then at most one
    converter (which may also transform tensors, e.g. transpose fused expert weights), so that this is the inverse
    of the conversion `save_pretrained` reverted.

    Args:
        model: the `PreTrainedModel` the state dict was saved from (or one of the same architecture).
        state_dict: checkpoint names to tensors.

    Returns:
        Model names to tensors.

    Example:
        >>> from videorft_hf.testing import build_tiny_vlm
        >>> model = build_tiny_vlm("qwen2_5_vl")[0]
        >>> sorted(weights_in_model_names(model, {"visual.merger.ln_q.weight": torch.ones(1)}))
        ['model.visual.merger.ln_q.weight']
    """
    from transformers.core_model_loading import WeightConverter, WeightRenaming, dot_natural_key, rename_source_key

    conversions = weight_conversions(model)
    if not conversions:
        return dict(state_dict)
    renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
    converters = [c for c in conversions if isinstance(c, WeightConverter)]
    converter_of = {pattern: c for c in converters for pattern in c.source_patterns}
    transforms: dict[str, Any] = {}
    for key, tensor in sorted(state_dict.items(), key=lambda item: dot_natural_key(item[0])):
        renamed, pattern = rename_source_key(key, renamings, converters)
        if pattern is not None:  # each target gets its own converter instance, as in from_pretrained
            transform = transforms.setdefault(renamed, copy.deepcopy(converter_of[pattern]))
        else:
            transform, pattern = transforms.setdefault(renamed, WeightRenaming(key, renamed)), key
        transform.add_tensor(renamed, key, pattern, tensor)
    converted = {}
    for first, transform in transforms.items():
        for name, value in transform.convert(first, model=model, config=model.config).items():
            converted[name] = value[0] if isinstance(value, list) else value
    return converted


def ignored_on_save(model, key: str) -> bool:
    """Whether `save_pretrained` leaves weight `key` out of a checkpoint (the model class's ignore patterns)."""
    patterns = getattr(model, "_keys_to_ignore_on_save", None) or []
    return any(re.search(pattern, key) for pattern in patterns)


def image_text_to_text_model_types() -> frozenset[str]:
    """The model types `AutoModelForImageTextToText` loads."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return frozenset(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)


# ------------------------------------------------------------------------- transformers' KV caches and attention
def attention_implementation(config) -> str | None:
    """The text model's attention implementation (`sdpa`, `eager`, ...) of a model config."""
    return getattr(config.get_text_config(), "_attn_implementation", None) or getattr(
        config, "_attn_implementation", None
    )


def has_fused_lm_head(model: torch.nn.Module) -> bool:
    """Whether trl's `add_fused_lm_head` gave the model its fused head (it replaces the instance's `forward`; the
    class keeps the plain one)."""
    return "forward" in vars(model)


def forward_cache(outputs):
    """The KV cache a forward returns (`cache` since transformers' rename, `past_key_values` before)."""
    cache = getattr(outputs, "cache", None)
    return cache if cache is not None else outputs.past_key_values


def expanded_cache_argument(outputs, index: torch.Tensor) -> dict[str, Any]:
    """The KV cache of a prefill forward, with its rows selected by `index` (each prompt's cache copied to the rows
    of its group), as the keyword `generate` continues from (`cache` since transformers' rename, `past_key_values`
    before)."""
    name = "cache" if getattr(outputs, "cache", None) is not None else "past_key_values"
    cache = getattr(outputs, name)
    cache.batch_select_indices(index)
    return {name: cache}


# ------------------------------------------------------------------------------------------- the rollout engine
# The rollout engine's (`videorft_hf.rollout`) private and layout-dependent names of transformers, torch, peft and
# bitsandbytes. Written against transformers 5.25, torch 2.14, peft 0.22 and bitsandbytes 0.50; transformers back to
# 5.15 is handled where it differs (the KV cache keyword, the repetition penalty).
def generation_defaults() -> dict[str, Any]:
    """transformers' global generation defaults, which `generate` applies to every field still unset (None)."""
    from transformers import GenerationConfig

    return GenerationConfig._get_default_generation_params()


def repetition_penalty_processor(penalty: float, prompt_mask: torch.Tensor):
    """transformers' repetition penalty as the installed `generate` builds it: releases that take per-row prompt
    padding (`prompt_ignore_length` as a tensor) ignore the left padding, as their `generate` does; earlier ones
    penalize every prompt token, padding included, as theirs does."""
    from transformers import RepetitionPenaltyLogitsProcessor

    padding = (prompt_mask != 0).int().argmax(dim=1)
    try:
        return RepetitionPenaltyLogitsProcessor(float(penalty), padding)
    except (TypeError, ValueError):  # transformers < 5.2x: an int only, and generate passes none
        return RepetitionPenaltyLogitsProcessor(float(penalty))


def language_model(base) -> torch.nn.Module:
    """The text decoder of a Qwen-VL `*ForConditionalGeneration` (transformers 5 layout: `model.language_model`)."""
    decoder = base.model.language_model
    _cache_keyword(decoder)  # looked up here, outside any compiled region
    return decoder


def cache_states(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`(keys, values)` of each layer of a filled `DynamicCache`, each `(rows, kv_heads, length, head_dim)`."""
    return [(layer.keys, layer.values) for layer in cache.layers]


_CACHE_KEYWORDS: dict[type, str] = {}


def _cache_keyword(decoder) -> str:
    """The keyword a decoder's forward takes its KV cache by (`cache` since transformers' rename, `past_key_values`
    before), per class."""
    cls = type(decoder)
    if cls not in _CACHE_KEYWORDS:
        _CACHE_KEYWORDS[cls] = "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"
    return _CACHE_KEYWORDS[cls]


def decoder_call(decoder, tokens, positions, mask, cache):
    """One decoder forward on the static cache. A 4-D mask goes to attention as it is (transformers builds none)."""
    return decoder(
        input_ids=tokens, position_ids=positions, attention_mask=mask, use_cache=True, **{_cache_keyword(decoder): cache}
    ).last_hidden_state


def mark_static(tensor: torch.Tensor) -> torch.Tensor:
    """Tells torch.compile the tensor keeps its address (CUDA graphs read it in place instead of copying it)."""
    torch._dynamo.mark_static_address(tensor)
    return tensor


def keep_quantized_layout(module: torch.nn.Module) -> None:
    """Stops bitsandbytes from repacking 4-bit weights in place for its CPU kernel.

    bitsandbytes' `Linear4bit` rewrites its weight into a CPU-specific layout at its first eval-mode forward on CPUs
    with AVX512-BF16 (`support_avx512bf16_for_cpu`). The engine's copy of the model shares the policy's weight
    objects and runs in eval mode, so that would rewrite the policy's weights under it (and bitsandbytes 0.50 fails
    to repack small layers). The flag is set on the copy's own layer objects; the policy's are untouched.
    """
    for layer in module.modules():
        if hasattr(layer, "support_avx512bf16_for_cpu"):
            layer.support_avx512bf16_for_cpu = False


def replace_submodule(model: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    """Puts `module` in place of `model`'s submodule `name` (a qualified name)."""
    parent_name, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent_name), leaf, module)


def lora_layers(base) -> list[tuple[str, torch.nn.Module]]:
    """peft LoRA layers of a model, by qualified name."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # peft is a core dependency; a model without it has no adapters
        return []
    return [(name, module) for name, module in base.named_modules() if isinstance(module, LoraLayer)]


def lora_merge_problem(layer) -> str:
    """Why `W0 + s * B @ A` would not reproduce a peft LoRA layer ("" when it does)."""
    base_layer = layer.get_base_layer()
    if not hasattr(base_layer, "in_features") or getattr(base_layer, "weight", None) is None:
        return f"{type(base_layer).__name__} base layer (merge_lora supports linear layers)"
    if type(base_layer.weight).__name__ == "Int8Params":
        return "8-bit base weights (merge_lora supports dense and 4-bit ones)"
    if getattr(layer, "merged", False) or getattr(layer, "merged_adapters", []):
        return "an adapter already merged into the base weights"
    for adapter in layer.active_adapters:
        if adapter not in layer.lora_A:
            continue
        if layer.use_dora.get(adapter, False):
            return f"DoRA adapter {adapter!r}"
        if getattr(layer, "lora_bias", {}).get(adapter, False):
            return f"adapter {adapter!r} with a LoRA bias"
    return ""


def lora_delta(layer) -> torch.Tensor | None:
    """Sum of `scaling * B @ A` over the layer's active adapters, in float32 (None when adapters are disabled)."""
    if layer.disable_adapters:
        return None
    delta = None
    for adapter in layer.active_adapters:
        if adapter in layer.lora_A:
            part = layer.get_delta_weight(adapter).float()
            delta = part if delta is None else delta + part
    return delta


def dense_weight(weight: torch.Tensor) -> torch.Tensor:
    """A linear layer's weight as a dense float32 tensor (bitsandbytes 4-bit weights dequantized)."""
    if type(weight).__name__ == "Params4bit":
        from peft.utils.integrations import dequantize_bnb_weight

        return dequantize_bnb_weight(weight).float()
    return weight.detach().float()
