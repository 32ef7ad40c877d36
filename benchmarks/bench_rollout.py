"""The rollout engine against transformers' `generate` where per-token overhead dominates.

A tiny Qwen2.5-VL (the test kit's, weights spread so that tokens vary) generates `--new_tokens` tokens for
`--prompts` text prompts x G = `--group` rows, with GRPO's sampling settings (temperature 1.0, top-p 0.95, the vision
placeholders suppressed) and no end of sequence, so every path decodes every step. The paths, timed in turns within
each repeat so that load on the machine falls on all of them alike:

- `generate`: `model.generate` as trl calls it (dynamic cache, every row prefilled);
- `engine`: `RolloutEngine` with the decode step run eagerly (`compile=False`);
- `compiled`: `RolloutEngine(compile=True)` (inductor on CPU; on CUDA a CUDA graph), compiled once before timing;
  its compile time is reported on its own (`compile_seconds`, from scratch: torch.compile's on-disk caches are
  off unless `--warm_cache`), not in its speed.

Each path draws from the same seed; the sampled tokens are checked to be the same (`tokens_equal`: the engine's
probabilities equal generate's to float rounding). Speed is generated tokens per second of wall-clock time, best of
the repeats; `*_speedup` is a path's speed over `generate`'s in the same run, and `*_cpu_speedup` the same in process
CPU seconds (one thread by default, so CPU time is compute time, less sensitive to other processes on the machine).

    HF_HUB_OFFLINE=1 python benchmarks/bench_rollout.py [--repeats 3] [--new_tokens 128] [--prompts 2] [--group 4]
    HF_HUB_OFFLINE=1 python benchmarks/bench_rollout.py --no_compile   # eager paths only

On CPU the figures are ratios of one run on a shared machine, not absolute speeds; `main(argv)` returns them as a
dict for the benchmark runner.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from videorft_hf.prompt_sharing import generation_groups  # noqa: E402
from videorft_hf.rollout import RolloutEngine  # noqa: E402
from videorft_hf.testing import build_tiny_vlm  # noqa: E402

NEVER = 10_000_000  # an end-of-sequence id outside the vocabulary


def build(layers: int, device: str, seed: int = 0):
    """The tiny model with its matrices spread (std 0.3) so that sampled tokens vary, and its processor."""
    model, processor = build_tiny_vlm("qwen2_5_vl", seed=seed, text_layers=layers)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    model.generation_config.eos_token_id = None
    return model.to(device), processor


def prompts(processor, count: int, group: int, device: str):
    """`count` chat prompts of different lengths, each repeated `group` times, left-padded."""
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "text", "text": "Describe the clip. " * (1 + 3 * i)}]}],
            add_generation_prompt=True, tokenize=False,
        )
        for i in range(count)
    ]
    encoded = processor.tokenizer([t for t in texts for _ in range(group)], return_tensors="pt", padding=True,
                                  padding_side="left")
    return encoded.input_ids.to(device), encoded.attention_mask.to(device)


def _timed(fn, device: str) -> tuple[float, float, torch.Tensor]:
    """Wall-clock seconds, process CPU seconds and the sequences of one call, from seed 0."""
    torch.manual_seed(0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started, started_cpu = time.perf_counter(), time.process_time()
    sequences = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started, time.process_time() - started_cpu, sequences


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark and returns its figures (tokens per second, speed-ups, compile seconds)."""
    from transformers import GenerationConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=2, help="unique prompts")
    parser.add_argument("--group", type=int, default=4, help="rows per prompt (G)")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers of the tiny model")
    parser.add_argument("--no_compile", action="store_true", help="skip the compiled path")
    parser.add_argument("--warm_cache", action="store_true",
                        help="let torch.compile reuse its on-disk caches (default: compile from scratch, as a first run)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.compiler.config.force_disable_caches = not args.warm_cache

    model, processor = build(args.layers, args.device)
    input_ids, attention_mask = prompts(processor, args.prompts, args.group, args.device)
    config = GenerationConfig(
        max_new_tokens=args.new_tokens, do_sample=True, temperature=1.0, top_p=0.95, top_k=0,
        suppress_tokens=[model.config.image_token_id, model.config.video_token_id],
        pad_token_id=processor.tokenizer.pad_token_id, eos_token_id=NEVER,
    )
    rows = input_ids.size(0)
    groups = generation_groups(rows, args.group)  # each prompt's rows one after another
    paths = {
        "generate": lambda: model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                           generation_config=config),
    }
    engine = RolloutEngine(model)
    paths["engine"] = lambda: engine.rollout(input_ids, attention_mask, generation_config=config,
                                             groups=groups).sequences
    figures: dict[str, Any] = {"rows": rows, "new_tokens": args.new_tokens, "prompt_width": input_ids.size(1),
                               "layers": args.layers, "threads": args.threads}
    if not args.no_compile:
        compiled = RolloutEngine(model, compile=True)
        figures["compile_seconds"] = compiled.warmup(rows, input_ids.size(1) + args.new_tokens)
        paths["compiled"] = lambda: compiled.rollout(input_ids, attention_mask, generation_config=config,
                                                     groups=groups).sequences

    with torch.no_grad():
        *_, reference = _timed(paths["generate"], args.device)  # warm-up, and the tokens the others must match
        wall, cpu = dict.fromkeys(paths, float("inf")), dict.fromkeys(paths, float("inf"))
        equal = True
        for _ in range(args.repeats):
            for name, fn in paths.items():
                seconds, cpu_seconds, sequences = _timed(fn, args.device)
                wall[name], cpu[name] = min(wall[name], seconds), min(cpu[name], cpu_seconds)
                equal &= torch.equal(sequences, reference)
    tokens = rows * args.new_tokens
    for name in paths:
        figures[f"{name}_tokens_per_s"] = tokens / wall[name]
        figures[f"{name}_ms_per_step"] = 1000 * wall[name] / args.new_tokens
        figures[f"{name}_cpu_ms_per_step"] = 1000 * cpu[name] / args.new_tokens
        if name != "generate":
            figures[f"{name}_speedup"] = wall["generate"] / wall[name]
            figures[f"{name}_cpu_speedup"] = cpu["generate"] / cpu[name]
    figures["tokens_equal"] = bool(equal)
    return figures


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
