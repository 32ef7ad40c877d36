"""Rollouts without vLLM: a static KV cache, one decode step compiled once, generation weights in the compute dtype.

`RolloutEngine` generates completions for left-padded prompts (G rows per prompt in GRPO, with their videos and
images) and returns what `model.generate` returns: `prompt + completion` sequences, plus the log-probs of the sampled
tokens when asked. It differs from `generate` in how the work is laid out, not in what is computed:

- **Prefill once per prompt.** Each unique prompt runs through the model once with its media (vision tower
  included); its keys and values are copied into every row of its group.
- **Static KV cache.** One cache of `rows x (prompt + max_new_tokens)` (rows rounded up to a bucket, length to a
  multiple of `length_multiple`) is allocated per shape and reused by every later call of that shape, so nothing
  grows by concatenation and every buffer keeps its address.
- **One decode step, compiled once.** The decode step (the language model on one token per row, the LM head) runs
  eagerly (`compile=False`, the default on CPU) or through `torch.compile` (`compile=True`; on CUDA in
  `mode="reduce-overhead"`, i.e. captured as a CUDA graph). The graph depends only on the bucket shape, so it serves
  every step and every batch of a run; the compile time of each shape is in `compile_seconds`.
- **Generation weights in the compute dtype.** Weights already in the compute dtype are the policy's own tensors;
  float32 trainable weights (the package keeps them in float32, `modeling.keep_updates`) get a copy in the compute
  dtype that `refresh()` rewrites in place after each optimizer step (same storage, so compiled graphs stay valid).
  QLoRA runs either the 4-bit base with its adapters (`merge_lora=False`) or merged copies `W0 + s * B @ A` in the
  compute dtype (`merge_lora=True`), rewritten by `refresh()`.

Positions follow the package's one M-RoPE rule, Qwen's original (`videorft_hf.positions.rope_index`), whatever the
installed transformers computes: the prompt's positions come from the rule, and decode step k of a row is at (the
prompt's largest position + 1 + k) on all three components. Left padding is masked out of attention.

Sampling follows a transformers `GenerationConfig` resolved as `generate` resolves it (unset fields from the model's
generation config, then transformers' defaults): repetition penalty, `suppress_tokens`, then (when `do_sample`)
temperature, top-k, top-p and min-p, through transformers' own logits processors in `generate`'s order; greedy when
`do_sample=False`; end of sequence per row (`eos_token_id` may be a list), padding after it; `max_new_tokens`.
Sampling draws with `torch.multinomial` on the global generator, one draw per row and step as `generate` does, so a
seed gives the same tokens as `generate` wherever the probabilities agree to the last bit (the engine may take a few
more draws after the last row has ended: it checks for that every `stop_check_every` steps). Options that change the
distribution in ways the engine does not reproduce (beams, n-gram bans, bad words, minimum lengths, typical-p, ...)
raise `UnsupportedGenerationError` instead of being ignored.

The log-probs returned with `return_logprobs=True` are vLLM's `processed_logprobs`, the mode trl requires for its
importance-sampling correction: `log_softmax` of the logits after every processor above (temperature, penalties,
top-k/top-p/min-p masking included), at the sampled token; 0 after a row's end of sequence.

The transformers, torch, peft and bitsandbytes internals the engine relies on (the KV cache's layout, the decoder,
LoRA layers, 4-bit weights, static addresses for compiled graphs) are in `videorft_hf.internals`.

`VideoGRPOTrainer` generates its rollouts with the engine when `generation_engine` resolves to "compiled" (the
default on CUDA: `videorft_hf.settings.resolve_generation_engine`), and `videorft eval`'s transformers backend
generates with it under the same rule (`evaluation.arguments.EvalArguments.generation_engine`).

Modules, each importing only those above it (every public name is re-exported here):

- `sampling`: `UnsupportedGenerationError`, `resolve_generation_config`, `logits_processors`, the end-of-sequence ids.
- `weights`: `GenerationWeights`, the module tree generated with and its copies refreshed in place.
- `engine`: `RolloutEngine`, its outputs (`Rollout`, `RolloutStats`), the static buffers of a bucket shape, the
  compiled decode step, `bucket_rows` and `split_vision`.

Example:
    ```python
    from transformers import GenerationConfig
    from videorft_hf.rollout import RolloutEngine

    engine = RolloutEngine(model, dtype=torch.bfloat16, compile=torch.cuda.is_available())
    config = GenerationConfig(max_new_tokens=256, do_sample=True, temperature=1.0, top_p=0.95,
                              eos_token_id=eos_ids, pad_token_id=pad_id, suppress_tokens=vision_placeholder_ids)
    out = engine.rollout(prompt_ids, prompt_mask, vision_rows, generation_config=config, groups=group_ids,
                         return_logprobs=True)
    out.sequences, out.logprobs            # (rows, prompt + steps), (rows, steps)
    engine.refresh()                      # after each optimizer step (or engine.refresh_after(optimizer) once)
    ```
"""

from .engine import Rollout, RolloutEngine, RolloutStats, bucket_rows, split_vision
from .sampling import UnsupportedGenerationError, logits_processors, resolve_generation_config
from .weights import GenerationWeights

__all__ = [
    "GenerationWeights",
    "Rollout",
    "RolloutEngine",
    "RolloutStats",
    "UnsupportedGenerationError",
    "bucket_rows",
    "logits_processors",
    "resolve_generation_config",
    "split_vision",
]
