"""The semantic-consistency reward on one GRPO group: G = 8 completions of one prompt about a 16-frame video.

Compares `get_semantic_consistency_reward` with the reference approach: decode the video again inside the reward
for each completion, then one SigLIP forward pass per frame per completion (one frame and one text per pass). The
release's variant of it (decode once per group, then one pass per frame on G frame copies and G texts) encodes the
same G * T frames; `--release-style` times that instead. Our reward is timed twice: with the frames the trainer
already decoded (`frames=`, as `VideoGRPOTrainer` passes them) and decoding the `video` column itself once (stock
trl). Frame encodings and encoder calls are counted with a hook on the vision tower; the rewards of both approaches
are checked to agree. Format and accuracy are timed on the same group for scale.

The encoder is a SigLIP built from a config, offline: `tiny` (videorft_hf.testing, 32 px) by default, or `base`
(a randomly initialised SigLIP-base-sized model, 224 px), where the encoder's cost dominates as with the paper's
so400m.

    HF_HUB_OFFLINE=1 python benchmarks/bench_rewards.py [--encoder tiny|base] [--repeats 5] [--release-style]

`main(argv)` returns the figures as a dict, for a benchmark runner.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from videorft_hf.rewards import (  # noqa: E402
    accuracy_reward,
    format_reward,
    get_semantic_consistency_reward,
    reasoning_span,
)
from videorft_hf.testing import build_tiny_siglip, write_test_video  # noqa: E402
from videorft_hf.video import VideoSamplingConfig, load_video_frames  # noqa: E402

GROUP_SIZE = 8
NUM_FRAMES = 16
WEIGHT = 2.0


def build_encoder(size: str):
    """(model, processor) of a SigLIP built offline from a config."""
    model, processor = build_tiny_siglip(seed=0)
    if size == "tiny":
        return model, processor
    if size != "base":
        raise ValueError(f"--encoder must be 'tiny' or 'base', got {size!r}.")
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    tokenizer = processor.tokenizer
    config = SiglipConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 64,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": tokenizer.eos_token_id,
        },
        vision_config={"image_size": 224, "patch_size": 16},
    )
    torch.manual_seed(0)
    model = SiglipModel(config).eval()
    image_processor = SiglipImageProcessor(
        size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return model, SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def make_group(rng: np.random.Generator) -> tuple[list, list[str], list[str]]:
    """G completions with distinct reasoning, all correct (so the accuracy gate computes every one)."""
    phrases = ["red block", "white squares", "blue corner", "green corner", "grid", "counter", "left", "frame"]
    completions, solutions, problem_types = [], [], []
    for i in range(GROUP_SIZE):
        words = " ".join(rng.choice(phrases, size=12))
        text = f"<think>Let me think. The video shows a {words}, attempt {i}.</think>\n<answer>B</answer>"
        completions.append([{"role": "assistant", "content": text}])
        solutions.append("<answer>B</answer>")
        problem_types.append("multiple choice")
    return completions, solutions, problem_types


def reference_semantic_reward(
    model, processor, completions: list, video_path: str, config: VideoSamplingConfig, release_style: bool
) -> list[float]:
    """The reference approach: decode inside the reward, one encoder pass per frame per completion."""
    texts = [reasoning_span(c[0]["content"]) for c in completions]

    def similarities(frame_images: list, batch_texts: list[str]) -> torch.Tensor:
        inputs = processor(
            images=frame_images, text=batch_texts, padding="max_length", truncation=True, return_tensors="pt"
        )
        with torch.inference_mode():
            out = model(**inputs)
        sims = (out.image_embeds * out.text_embeds).sum(dim=-1)
        return torch.clamp(WEIGHT * sims.clamp_min(0.0), max=1.0)

    if release_style:  # decode once per group; one pass per frame on G copies of it and the G texts
        frames, _ = load_video_frames(video_path, config)
        per_frame = [similarities([Image.fromarray(f)] * len(texts), texts) for f in frames]
        return torch.stack(per_frame).mean(dim=0).tolist()
    rewards = []
    for text in texts:  # decode again for every completion; one pass per frame
        frames, _ = load_video_frames(video_path, config)
        per_frame = [similarities([Image.fromarray(f)], [text]) for f in frames]
        rewards.append(float(torch.cat(per_frame).mean()))
    return rewards


def timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    fn()  # warm-up (lazy imports, allocator)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return result, statistics.median(seconds)


def counted(model, fn: Callable[[], Any]) -> tuple[Any, int, int]:
    """Runs `fn` once, returning its result, vision-tower calls and frames encoded."""
    calls = []
    handle = model.vision_model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    try:
        result = fn()
    finally:
        handle.remove()
    return result, len(calls), sum(calls)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark and returns its figures (counts, seconds and ratios)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", choices=["tiny", "base"], default="tiny")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--release-style", action="store_true", help="Time the release's variant as the reference.")
    parser.add_argument(
        "--threads",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="torch CPU threads (fixed for comparable timings).",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, processor = build_encoder(args.encoder)
    config = VideoSamplingConfig.from_preset("videorft-train")  # 16 frames at 128*28*28 pixels, as in training
    completions, solutions, problem_types = make_group(np.random.default_rng(0))
    columns = {"solution": solutions, "problem_type": problem_types}
    with tempfile.TemporaryDirectory() as tmp:
        video_path = str(
            write_test_video(
                os.path.join(tmp, "clip.mp4"), num_frames=NUM_FRAMES, fps=2.0, width=320, height=240, pattern="noise"
            )
        )
        reward = get_semantic_consistency_reward(model=model, processor=processor, weight=WEIGHT)

        def ours_with_frames():
            frames, _ = load_video_frames(video_path, config)  # the trainer's one decode for the rollout...
            # ...whose array it passes for every completion of the prompt; only the reward is timed below
            return lambda: reward(completions, frames=[frames] * GROUP_SIZE, **columns)

        ours_frames_fn = ours_with_frames()
        ours_decode_fn = lambda: reward(completions, video=[video_path] * GROUP_SIZE, **columns)  # noqa: E731
        reference_fn = lambda: reference_semantic_reward(  # noqa: E731
            model, processor, completions, video_path, config, args.release_style
        )

        ours_frames, ours_calls, ours_encoded = counted(model, ours_frames_fn)
        ours_decoded, _, ours_decode_encoded = counted(model, ours_decode_fn)
        reference, reference_calls, reference_encoded = counted(model, reference_fn)
        _, t_ours_frames = timed(ours_frames_fn, args.repeats)
        _, t_ours_decode = timed(ours_decode_fn, args.repeats)
        _, t_reference = timed(reference_fn, max(1, args.repeats // 2))
        _, t_format_accuracy = timed(
            lambda: (format_reward(completions), accuracy_reward(completions, **columns)), args.repeats
        )

    max_difference = float(np.max(np.abs(np.asarray(ours_frames) - np.asarray(reference))))
    figures = {
        "encoder": args.encoder,
        "reference": "release-style (1 decode, T passes of G pairs)"
        if args.release_style
        else "G decodes, G*T passes",
        "group_size": GROUP_SIZE,
        "frames_per_video": NUM_FRAMES,
        "decodes_reference": 1 if args.release_style else GROUP_SIZE,
        "decodes_ours_with_frames": 0,
        "decodes_ours_stock_trl": 1,
        "frame_encodings_reference": reference_encoded,
        "frame_encodings_ours": ours_encoded,
        "frame_encodings_ours_stock_trl": ours_decode_encoded,
        "frame_encoding_ratio": reference_encoded / ours_encoded,
        "encoder_calls_reference": reference_calls,
        "encoder_calls_ours": ours_calls,
        "encoder_call_ratio": reference_calls / ours_calls,
        "seconds_reference": t_reference,
        "seconds_ours_with_frames": t_ours_frames,
        "seconds_ours_stock_trl": t_ours_decode,
        "wall_ratio_with_frames": t_reference / t_ours_frames,
        "wall_ratio_stock_trl": t_reference / t_ours_decode,
        "seconds_format_plus_accuracy": t_format_accuracy,
        "max_abs_reward_difference": max_difference,
        "rewards_agree": max_difference < 1e-4 and np.allclose(ours_decoded, ours_frames, atol=1e-6),
    }
    return figures


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
