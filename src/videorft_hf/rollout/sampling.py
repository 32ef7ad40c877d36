"""The rollout engine's generation settings: a `GenerationConfig` resolved as `generate` resolves it, the settings
the engine reproduces (any other is an `UnsupportedGenerationError`), transformers' logits processors in `generate`'s
order, and the end-of-sequence ids."""

from __future__ import annotations

import copy

import torch

from .. import internals

__all__ = ["UnsupportedGenerationError", "logits_processors", "resolve_generation_config"]


class UnsupportedGenerationError(ValueError):
    """A generation setting the engine does not reproduce, or inputs it cannot generate from."""


# Settings that change what `generate` computes, with the values at which they change nothing. The engine refuses
# any other value rather than ignore it. (Warpers only apply when sampling: see `_SAMPLING_ONLY`.)
_NO_EFFECT: dict[str, tuple] = {
    "num_beams": (None, 1),
    "num_return_sequences": (None, 1),
    "num_beam_groups": (None, 1),
    "penalty_alpha": (None,),
    "guidance_scale": (None, 1, 1.0),
    "sequence_bias": (None,),
    "encoder_repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "remove_invalid_values": (None, False),
    "exponential_decay_length_penalty": (None,),
    "begin_suppress_tokens": (None,),
    "watermarking_config": (None,),
    "stop_strings": (None,),
    "max_time": (None,),
    "prompt_lookup_num_tokens": (None,),
    "top_h": (None,),
    "typical_p": (None, 1.0),
    "epsilon_cutoff": (None, 0.0),
    "eta_cutoff": (None, 0.0),
}
_SAMPLING_ONLY = {"top_h", "typical_p", "epsilon_cutoff", "eta_cutoff"}


def resolve_generation_config(config, model=None):
    """The generation config as `model.generate` resolves it, checked against what the engine reproduces.

    `generate` copies the config, fills every field left unset (None) from the model's `generation_config`, then
    from transformers' global defaults (e.g. `top_k=50`). The engine does the same, so both sample from the same
    distributions.

    Args:
        config: a `transformers.GenerationConfig` (not modified).
        model: the model whose `generation_config` fills unset fields (None: only the global defaults).

    Returns:
        The resolved copy.

    Raises:
        UnsupportedGenerationError: a setting the engine does not reproduce (beams, n-gram bans, minimum lengths,
            typical-p, ...), naming each.

    Example:
        >>> from transformers import GenerationConfig
        >>> resolve_generation_config(GenerationConfig(do_sample=True, top_p=0.9)).top_k
        50
    """
    config = copy.deepcopy(config)
    model_config = getattr(model, "generation_config", None)
    if model_config is not None:
        config.update(**model_config.to_dict(), defaults_only=True, allow_custom_entries=True)
    config.update(**internals.generation_defaults(), defaults_only=True)
    unsupported = []
    for name, neutral in _NO_EFFECT.items():
        if name in _SAMPLING_ONLY and not config.do_sample:
            continue
        value = getattr(config, name, None)
        if not any(value == ok if ok is not None else value is None for ok in neutral):
            unsupported.append(f"{name}={value!r}")
    if unsupported:
        raise UnsupportedGenerationError(
            f"The rollout engine does not reproduce these generation settings: {', '.join(unsupported)}. Unset them, "
            "or generate with the model's own generate."
        )
    return config


def _eos_ids(config) -> list[int]:
    eos = config.eos_token_id
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, list | tuple) else [eos])]


def logits_processors(config, prompt_mask: torch.Tensor):
    """transformers' logits processors for a resolved config, in the order `generate` applies them.

    Args:
        config: a config from `resolve_generation_config`.
        prompt_mask: `(rows, prompt_width)` attention mask of the left-padded prompts; the repetition penalty
            ignores the padding, as in `generate`.

    Returns:
        A `transformers.LogitsProcessorList`, called as `processors(input_ids, scores)` with the sequences so far
        (prompt and completion) and float32 scores.

    Example:
        >>> from transformers import GenerationConfig
        >>> config = resolve_generation_config(GenerationConfig(do_sample=True, temperature=0.7, top_p=0.9))
        >>> [type(p).__name__ for p in logits_processors(config, torch.ones(1, 3, dtype=torch.long))]
        ['TemperatureLogitsWarper', 'TopKLogitsWarper', 'TopPLogitsWarper']
    """
    from transformers import (
        LogitsProcessorList,
        MinPLogitsWarper,
        SuppressTokensLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    device = prompt_mask.device
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        processors.append(internals.repetition_penalty_processor(config.repetition_penalty, prompt_mask))
    if config.suppress_tokens is not None:
        processors.append(SuppressTokensLogitsProcessor(config.suppress_tokens, device=device))
    if config.do_sample:
        if config.temperature is not None and config.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k is not None and config.top_k != 0:
            processors.append(TopKLogitsWarper(top_k=config.top_k, min_tokens_to_keep=1))
        if config.top_p is not None and config.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=config.top_p, min_tokens_to_keep=1))
        if config.min_p is not None:
            processors.append(MinPLogitsWarper(min_p=config.min_p, min_tokens_to_keep=1))
    return processors
