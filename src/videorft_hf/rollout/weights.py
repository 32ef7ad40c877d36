"""The rollout engine's generation weights (`GenerationWeights`): the policy's module tree with its weights in the
compute dtype, float32 copies and merged LoRA weights rewritten in place by `refresh()`."""

from __future__ import annotations

import copy
from typing import Any

import torch

from .. import internals
from .sampling import UnsupportedGenerationError

__all__ = ["GenerationWeights"]


def _transformers_model(model) -> torch.nn.Module:
    """The transformers model inside distributed and peft wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def _config_dtype(base) -> torch.dtype:
    # A composite config built in memory states its dtype on the text config only in transformers < 5.2x.
    dtype = getattr(base.config, "dtype", None) or getattr(base.config.get_text_config(), "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


class GenerationWeights:
    """The module tree the engine generates with: the policy's structure, its weights in the compute dtype.

    A shallow copy of the transformers model (modules copied, tensors shared): every parameter and buffer already in
    `dtype`, and every quantized one, is the policy's own tensor; every floating parameter in another dtype (float32
    trainable weights, as the package keeps them) is a copy in `dtype`. With `merge_lora`, each peft LoRA linear layer
    becomes a plain linear layer holding `W0 + sum(scaling * B @ A)` in `dtype` (W0 dequantized when 4-bit). The
    copy is in eval mode (no dropout) whatever mode the policy is in, and never changes the policy.

    `refresh()` rewrites the copies and merged weights from the policy in place: same storage, so compiled graphs
    and CUDA graphs that read them stay valid.

    Args:
        model: the policy (a transformers Qwen-VL model, possibly wrapped by peft or DDP).
        dtype: the compute dtype.
        merge_lora: merge LoRA adapters into dense copies (QLoRA option b) instead of running them as adapters.

    Attributes:
        module: the transformers model to run.
        copies: `(policy tensor, copy)` pairs rewritten by `refresh()`.
        merged: `(peft LoRA layer, merged weight)` pairs rewritten by `refresh()`.
    """

    def __init__(self, model, dtype: torch.dtype, merge_lora: bool = False):
        base = _transformers_model(model)
        self.dtype = dtype
        self.merge_lora = merge_lora
        self.source = base
        lora = internals.lora_layers(base) if merge_lora else []
        if merge_lora and not lora:
            raise UnsupportedGenerationError("merge_lora=True, but the model has no peft LoRA layers.")
        problems = [f"{name}: {problem}" for name, layer in lora if (problem := internals.lora_merge_problem(layer))]
        if problems:
            raise UnsupportedGenerationError(
                "merge_lora=True cannot reproduce these LoRA layers: " + "; ".join(problems[:5])
                + ". Use merge_lora=False (the adapters run as they are)."
            )
        # The merged layers' own tensors are not needed in the copy: they are replaced below.
        replaced = {id(t) for _, layer in lora for t in (*layer.parameters(), *layer.buffers())}
        memo: dict[int, Any] = {}
        self.copies: list[tuple[torch.Tensor, torch.nn.Parameter]] = []
        self._shared: list[tuple[torch.nn.Parameter, torch.dtype]] = []  # policy tensors generated with as they are
        for parameter in base.parameters():
            if id(parameter) in memo:
                continue
            if parameter.is_floating_point() and parameter.dtype != dtype and id(parameter) not in replaced:
                clone = torch.nn.Parameter(parameter.detach().to(dtype, copy=True), requires_grad=False)
                self.copies.append((parameter, clone))
                memo[id(parameter)] = clone
            else:
                memo[id(parameter)] = parameter
                if parameter.is_floating_point():
                    self._shared.append((parameter, parameter.dtype))
        for buffer in base.buffers():
            memo.setdefault(id(buffer), buffer)
        self.module = copy.deepcopy(base, memo)  # modules copied; every tensor taken from the memo
        self.module.eval()
        internals.keep_quantized_layout(self.module)
        self.merged: list[tuple[torch.nn.Module, torch.nn.Parameter]] = []
        for name, layer in lora:
            base_layer = layer.get_base_layer()
            linear = torch.nn.Linear(
                base_layer.in_features, base_layer.out_features, bias=base_layer.bias is not None,
                device=base_layer.weight.device, dtype=dtype,
            ).requires_grad_(False)
            internals.replace_submodule(self.module, name, linear)
            self.merged.append((layer, linear.weight))
            if base_layer.bias is not None:
                self.copies.append((base_layer.bias, linear.bias))
        self.refresh()

    @property
    def mode(self) -> str:
        """`"policy"` (the policy's own tensors), `"copies"` (some weights copied) or `"merged"` (LoRA merged)."""
        return "merged" if self.merged else ("copies" if self.copies else "policy")

    def check(self) -> None:
        """Raises `UnsupportedGenerationError` if a policy tensor generated with as it is changed dtype since the
        copy was built (e.g. `modeling.keep_updates` ran after the engine was built)."""
        changed = [tuple(p.shape) for p, dtype in self._shared if p.dtype != dtype]
        if changed:
            raise UnsupportedGenerationError(
                f"{len(changed)} of the policy's weights changed dtype since the rollout engine was built (the "
                "precision rule upcasts trainable weights to float32): build the engine after "
                "modeling.keep_updates, or call engine.rebuild()."
            )

    @torch.no_grad()
    def refresh(self) -> None:
        """Rewrites every copy and merged weight from the policy, in place (their storage never changes)."""
        for source, target in self.copies:
            target.copy_(source)
        for layer, target in self.merged:
            weight = internals.dense_weight(layer.get_base_layer().weight)
            delta = internals.lora_delta(layer)
            target.copy_(weight if delta is None else weight + delta.to(weight.device))

    def nbytes(self) -> int:
        """Bytes held by copies and merged weights (beyond the policy's own)."""
        return sum(t.numel() * t.element_size() for _, t in [*self.copies, *self.merged])
