"""Log-prob passes with the prompt computed once per group against trl's per-row computation, on a long video prompt.

One GRPO micro-batch: `--prompts` video prompts (a 320x240 clip at the VideoRFT training preset, 16 frames at
128*28*28 pixels: 1,120 video tokens in a 1,186-token prompt, about the paper's shape) times G = 8 completions of up
to `--completion` tokens, rows shuffled as trl shuffles them. Each repeat times a forward and backward pass of a
GRPO-like loss over the completion log-probs and entropies through `shared_prompt_logps`, shared and with
`share=False` (per row: each row is `prompt + completion` with its own vision tensors, as trl 1.16's
`_get_per_token_logps_and_entropies` and `VideoGRPOTrainer` compute it; the tests check that this path equals trl's
bit for bit). Step time is the best of the repeats, in wall-clock and in process CPU
seconds. Vision patches are counted with a hook on the vision tower, language-model tokens from the batches each
path builds, activation memory as the tensors autograd saves for the backward pass; the two paths' log-probs are
checked to agree. Greedy generation of `--completion` tokens is timed too, each unique prompt prefilled once
(`generate_with_shared_prefill`) against every row prefilled; the sequences are checked to agree. Last, whole `VideoGRPOTrainer` steps (generation, reward, reference and policy passes, backward,
optimiser) are timed with `share_prompt_compute` on and off (`--trainer_steps`).

    HF_HUB_OFFLINE=1 python benchmarks/bench_prefix.py [--repeats 3] [--prompts 1] [--completion 16]

Tiny Qwen2.5-VL on the CPU: the figures are ratios measured in one run, not absolute speeds. `main(argv)` returns
them as a dict, for the benchmark runner.

On a GPU, `--model full --device cuda` runs the same passes at the paper's scale: Qwen2.5-VL-7B's exact architecture
(random weights, bf16, built on the GPU from its config as in `bench_gpu.py`), with gradient checkpointing as the
recipes set it, and adds each path's peak allocated GPU memory. `bench_gpu.py` runs it so (`prefix-sharing-1024`):

    HF_HUB_OFFLINE=1 python benchmarks/bench_prefix.py --model full --device cuda --completion 1024 \
        --generation_tokens 16 --trainer_steps 0
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from videorft_hf.processing import encode_prompt, load_row_media, model_sampling_config, render_prompt  # noqa: E402
from videorft_hf.prompt_sharing import generate_with_shared_prefill, shared_prompt_logps  # noqa: E402
from videorft_hf.testing import build_tiny_vlm, write_test_video  # noqa: E402
from videorft_hf.video import VideoSamplingConfig  # noqa: E402

GROUP_SIZE = 8


def build_batch(model, processor, videos: list[str], completion: int, seed: int = 0):
    """trl's layout for len(videos) prompts x G completions, rows shuffled as trl shuffles them: input_ids,
    attention_mask, per-row vision, prompt ids and each row's group."""
    config = model_sampling_config(VideoSamplingConfig.from_preset("videorft-train"), model.config, processor)
    rng = torch.Generator().manual_seed(seed)
    prompt_ids, vision_rows = [], []
    for i, path in enumerate(videos):
        row = {"prompt": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": f"Clip {i}?"}]}],
               "video": path}
        media = load_row_media(row, config)
        ids, vision = encode_prompt(processor, render_prompt(processor, row["prompt"]), media.videos)
        prompt_ids += [ids] * GROUP_SIZE
        vision_rows += [vision] * GROUP_SIZE
    order = torch.randperm(len(prompt_ids), generator=rng).tolist()
    prompt_ids, vision_rows = [prompt_ids[i] for i in order], [vision_rows[i] for i in order]
    groups = [i // GROUP_SIZE for i in order]
    width = max(map(len, prompt_ids))
    lengths = torch.randint(completion // 2, completion + 1, (len(prompt_ids),), generator=rng).tolist()
    pad = processor.tokenizer.pad_token_id
    input_ids, mask = [], []
    for ids, length in zip(prompt_ids, lengths, strict=True):
        tokens = torch.randint(0, 250, (length,), generator=rng).tolist()
        input_ids.append([pad] * (width - len(ids)) + ids + tokens + [pad] * (completion - length))
        mask.append([0] * (width - len(ids)) + [1] * (len(ids) + length) + [0] * (completion - length))
    return torch.tensor(input_ids), torch.tensor(mask), vision_rows, prompt_ids, groups


def build_model(kind: str, device: str):
    """The tiny Qwen2.5-VL of the test kit (fp32), or Qwen2.5-VL-7B's architecture in bf16 built on `device`."""
    if kind == "tiny":
        model, processor = build_tiny_vlm("qwen2_5_vl")
        return model.to(device), processor
    from transformers import AutoModelForImageTextToText

    from benchmarks.bench_gpu import full_config, tokenizer_corpus
    from videorft_hf.testing import build_tiny_processor

    processor = build_tiny_processor("qwen2_5_vl", tokenizer_corpus=tokenizer_corpus())
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(full_config("qwen2_5_vl", processor.tokenizer),
                                                        dtype=torch.bfloat16)
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.25's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, processor


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def step(model, logps, entropies, mask) -> None:
    loss = ((torch.exp(logps) - 0.01 * entropies) * mask).sum() / mask.sum()
    loss.backward()
    model.zero_grad(set_to_none=True)


def saved_for_backward_mib(run) -> float:
    """MiB of distinct tensors autograd keeps for the backward pass of `run()` (activation memory, the part of peak
    memory that differs between the two paths; a CPU stand-in for the GPU's peak allocation)."""
    seen: dict[tuple, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = run()
    del out
    return sum(seen.values()) / 2**20


def time_generation(model, processor, prompt_ids, prompt_mask, vision_rows, groups, new_tokens,
                    repeats) -> dict[str, Any]:
    """Best-of-`repeats` seconds of greedy `generate` for the batch's prompts, prefilled once per unique prompt and
    per row; the sequences must agree."""
    seconds: dict[str, list[float]] = {"shared": [], "per_row": []}
    sequences = {}
    model.eval()
    with torch.no_grad():
        for repeat in range(repeats + 1):
            for name in seconds:
                _synchronize()
                start = time.perf_counter()
                sequences[name] = generate_with_shared_prefill(
                    model, prompt_ids, prompt_mask, vision_rows, groups=groups, share=name == "shared",
                    max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id,
                )
                _synchronize()
                if repeat:
                    seconds[name].append(time.perf_counter() - start)
    model.train()
    return {
        "s": {name: min(values) for name, values in seconds.items()},
        "same_sequences": bool(torch.equal(sequences["shared"], sequences["per_row"])),
        "vision_patches": {},
    }


def time_trainer_steps(videos: list[str], completion: int, steps: int) -> dict[str, Any]:
    """Whole `VideoGRPOTrainer` steps (generation, reference and policy passes, backward, optimiser) on the same
    model and batch with `share_prompt_compute` on and off; the median step after a warm-up step."""
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, TrainerCallback

    from videorft_hf.configs import VideoGRPOConfig
    from videorft_hf.testing import save_tiny_vlm
    from videorft_hf.trainer import VideoGRPOTrainer

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.seconds = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.start)

    def reward(completions, **kwargs):
        return [float(i % 2) for i in range(len(completions))]

    rows = [{"prompt": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": f"Clip {i}?"}]}],
             "video": path} for i, path in enumerate(videos)]
    figures: dict[str, Any] = {"s": {}}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_tiny_vlm("qwen2_5_vl", os.path.join(tmp, "model"))
        for share in (True, False):
            args = VideoGRPOConfig(
                output_dir=os.path.join(tmp, f"out{share}"), per_device_train_batch_size=GROUP_SIZE * len(videos),
                num_generations=GROUP_SIZE, max_completion_length=completion, max_steps=steps + 1, beta=0.04,
                loss_type="grpo", learning_rate=1e-6, report_to=[], use_cpu=True, bf16=False, save_strategy="no",
                disable_tqdm=True, logging_steps=1, seed=0, share_prompt_compute=share,
                video_sampling_preset="videorft-train",
            )
            times = StepTimes()
            trainer = VideoGRPOTrainer(
                AutoModelForImageTextToText.from_pretrained(model_dir), [reward], args=args,
                train_dataset=Dataset.from_list(rows * (steps + 1)), callbacks=[times],
            )
            trainer.train()
            figures["s"]["shared" if share else "per_row"] = sorted(times.seconds[1:])[len(times.seconds[1:]) // 2]
    figures["speedup"] = figures["s"]["per_row"] / figures["s"]["shared"]
    return figures


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark and returns its figures (seconds, counts and ratios)."""
    from trl.trainer.utils import add_fused_lm_head

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=1, help="unique video prompts in the micro-batch")
    parser.add_argument("--completion", type=int, default=16, help="completion width in tokens")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--trainer_steps", type=int, default=2, help="timed VideoGRPOTrainer steps (0: none)")
    parser.add_argument("--model", choices=("tiny", "full"), default="tiny",
                        help="the test kit's tiny Qwen2.5-VL, or Qwen2.5-VL-7B's architecture (GPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--generation_tokens", type=int, help="new tokens of the timed generation (default: --completion)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cuda = torch.device(args.device).type == "cuda"
    if args.trainer_steps and (args.model != "tiny" or cuda):
        parser.error("--trainer_steps times the tiny model on the CPU; pass --trainer_steps 0 with --model full")

    model, processor = build_model(args.model, args.device)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    model.train()
    with tempfile.TemporaryDirectory() as tmp:
        videos = [
            str(write_test_video(os.path.join(tmp, f"clip{i}.mp4"), num_frames=16, fps=2.0, width=320, height=240))
            for i in range(args.prompts)
        ]
        input_ids, mask, vision_rows, prompt_ids, groups = build_batch(model, processor, videos, args.completion)
        input_ids, mask = input_ids.to(args.device), mask.to(args.device)
        trainer = time_trainer_steps(videos, args.completion, args.trainer_steps) if args.trainer_steps else None
    keep = args.completion
    completion_mask = mask[:, -keep:]
    video_tokens = sum(1 for t in prompt_ids[0] if t == model.config.video_token_id)

    patches = 0

    def count(module, inputs, output):
        nonlocal patches
        patches += inputs[0].shape[0]

    model.model.visual.register_forward_hook(count)
    paths = {
        "shared": lambda: shared_prompt_logps(model, input_ids, mask, keep, vision_rows, groups=groups,
                                              compute_entropy=True),
        "per_row": lambda: shared_prompt_logps(
            model, input_ids, mask, keep, vision_rows, groups=groups, compute_entropy=True, share=False
        ),
    }
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in paths}
    peak_gib: dict[str, float] = {}
    vision: dict[str, int] = {}
    results: dict[str, torch.Tensor] = {}
    stats = {}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name in paths if repeat % 2 else reversed(paths):
            patches = 0
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start, cpu_start = time.perf_counter(), time.process_time()
            out = paths[name]()
            step(model, out.logps, out.entropies, completion_mask)
            if cuda:
                torch.cuda.synchronize()
                peak_gib[name] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            if repeat:
                seconds[name].append(time.perf_counter() - start)
                cpu_seconds[name].append(time.process_time() - cpu_start)
            vision[name] = patches
            results[name] = out.logps.detach()
            stats[name] = out.stats
    activations = {name: saved_for_backward_mib(run) for name, run in paths.items()}
    real = completion_mask.bool()

    def differences(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
        delta = (a.float() - b.float()).abs()[real]
        return {"max": delta.max().item(), "mean": delta.mean().item()}
    prompts, prompt_mask = input_ids[:, :-keep], mask[:, :-keep]
    new_tokens = args.generation_tokens or keep
    generation = time_generation(model, processor, prompts, prompt_mask, vision_rows, groups, new_tokens,
                                 args.repeats)
    for name in ("shared", "per_row"):  # the tower's patches per generate call
        patches = 0
        generate_with_shared_prefill(
            model, prompts, prompt_mask, vision_rows, groups=groups, share=name == "shared",
            max_new_tokens=1, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id,
        )
        generation["vision_patches"][name] = patches
    # What sharing needs at least: each prompt once, plus every completion token.
    needed = sum(len(ids) for ids in dict.fromkeys(map(tuple, prompt_ids))) + int(completion_mask.sum())
    # Best of the repeats: on a shared machine, other processes only ever add time.
    step_s = {name: min(values) for name, values in seconds.items()}
    step_cpu_s = {name: min(values) for name, values in cpu_seconds.items()}
    figures = {
        "model": args.model,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "shape": {"rows": input_ids.size(0), "prompts": args.prompts, "video_tokens": video_tokens,
                  "prompt_tokens": len(prompt_ids[0]), "completion": keep, "generation_tokens": new_tokens},
        "step_s": step_s,
        "step_speedup": step_s["per_row"] / step_s["shared"],
        "step_cpu_s": step_cpu_s,
        "step_cpu_speedup": step_cpu_s["per_row"] / step_cpu_s["shared"],
        "vision_patches": vision,
        "vision_patch_ratio": vision["per_row"] / vision["shared"],
        "lm_tokens": {"shared": stats["shared"].lm_tokens, "per_row": stats["per_row"].lm_tokens, "needed": needed},
        "lm_token_ratio": stats["per_row"].lm_tokens / stats["shared"].lm_tokens,
        "lm_tokens_over_needed": stats["shared"].lm_tokens / needed,
        "activation_mib": activations,
        "activation_memory_ratio": activations["per_row"] / activations["shared"],
        "peak_allocated_gib": peak_gib or None,
        "max_abs_logp_difference": (results["shared"] - results["per_row"]).abs().max().item(),
        "logp_difference": differences(results["shared"], results["per_row"]),
        "trainer_step": trainer,
        "generation": {
            **generation,
            "speedup": generation["s"]["per_row"] / generation["s"]["shared"],
            "vision_patch_ratio": generation["vision_patches"]["per_row"] / generation["vision_patches"]["shared"],
        },
    }
    if next(model.parameters()).dtype != torch.float32:
        # In bf16 the two paths round differently: measure each one's error against the per-row computation in
        # float32 (the model cast in place, at the end), so that the shared path's error reads against trl's own.
        model.float()
        with torch.no_grad():
            exact = shared_prompt_logps(model, input_ids, mask, keep, vision_rows, groups=groups, share=False).logps
        figures["logp_error_vs_fp32"] = {name: differences(results[name], exact) for name in ("shared", "per_row")}
    if args.json:
        import json

        with open(args.json, "w") as stream:
            json.dump(figures, stream, indent=2, default=str)
    return figures


def _print(figures: dict) -> None:
    print("| measure | value |\n|---|---|")
    for key, value in figures.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.3g}"
        print(f"| {key} | {value} |")


if __name__ == "__main__":
    _print(main())
