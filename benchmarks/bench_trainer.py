"""VideoGRPOTrainer against stock trl: step time on the same image and text workloads, and video decodes per step
with and without the once-per-unique-video rule.

    python benchmarks/bench_trainer.py [--steps 6]

Tiny models on the CPU: the figures are ratios measured in one run, not absolute speeds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _rows(kind: str, media: dict, n: int = 4) -> list[dict]:
    from PIL import Image

    if kind == "text":
        return [{"prompt": [{"role": "user", "content": f"Count to {i}."}]} for i in range(n)]
    if kind == "image":
        image = Image.open(media["image"]).convert("RGB")
        return [
            {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"Colour {i}?"}]}],
             "image": image}
            for i in range(n)
        ]
    return [
        {"prompt": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": f"What happens {i}?"}]}],
         "video": media["videos"][i % len(media["videos"])]}
        for i in range(n)
    ]


def _reward(completions, **kwargs):
    return [len(c[0]["content"]) / 10 for c in completions]


def _time_steps(trainer_cls, model_dir, rows, out, steps, **extra):
    """Seconds per optimizer step (median over steps after the first), measured by trl's own step timer."""
    from datasets import Dataset
    from trl import GRPOConfig

    from videorft_hf.configs import VideoGRPOConfig

    config_cls = VideoGRPOConfig if extra else GRPOConfig
    args = config_cls(
        output_dir=str(out), per_device_train_batch_size=8, num_generations=4, max_completion_length=16,
        max_steps=steps, report_to=[], use_cpu=True, bf16=False, logging_steps=1, save_strategy="no", seed=0,
        temperature=1.0, **extra,
    )
    trainer = trainer_cls(model_dir, reward_funcs=[_reward], args=args, train_dataset=Dataset.from_list(rows))
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    step_times = [h["step_time"] for h in trainer.state.log_history if "step_time" in h][1:]
    return statistics.median(step_times), wall, trainer


def main(steps: int = 6) -> dict:
    from trl import GRPOTrainer

    from videorft_hf.testing import save_tiny_vlm, write_test_image, write_test_video
    from videorft_hf.trainer import VideoGRPOTrainer

    tmp = Path(tempfile.mkdtemp(prefix="bench_trainer_"))
    model_dir = str(save_tiny_vlm("qwen2_5_vl", tmp / "model"))
    media = {"image": str(write_test_image(tmp / "img.png", width=224, height=224)), "videos": []}
    for i in range(2):
        path = tmp / f"clip{i}.mp4"
        write_test_video(path, num_frames=240, fps=24, width=320, height=180, pattern="noise")
        media["videos"].append(str(path))
    figures: dict = {}
    _time_steps(GRPOTrainer, model_dir, _rows("text", media), tmp / "warmup", 2)  # one-time process costs
    for kind in ("text", "image"):
        # Interleaved repeats; the best median of each class is compared, which cancels machine noise best.
        times = {GRPOTrainer: [], VideoGRPOTrainer: []}
        for repeat in range(2):
            for cls in (GRPOTrainer, VideoGRPOTrainer) if repeat == 0 else (VideoGRPOTrainer, GRPOTrainer):
                step, _, _ = _time_steps(cls, model_dir, _rows(kind, media), tmp / f"{cls.__name__}_{kind}_{repeat}", steps)
                times[cls].append(step)
        stock, ours = min(times[GRPOTrainer]), min(times[VideoGRPOTrainer])
        figures[f"{kind}_step_time_ratio"] = ours / stock
        figures[f"{kind}_step_s"] = {"GRPOTrainer": stock, "VideoGRPOTrainer": ours}

    class DecodePerRow(VideoGRPOTrainer):
        """The reference behaviour: every row decodes its own video (G decodes per prompt)."""

        def _load_media(self, inputs):
            return [super(DecodePerRow, self)._load_media([row])[0] for row in inputs]

    sampling = dict(video_sampling_preset="videorft-train", video_min_pixels=16 * 784, video_max_pixels=16 * 784)
    results = {}
    for name, cls in (("once_per_video", VideoGRPOTrainer), ("per_row", DecodePerRow)):
        step, wall, trainer = _time_steps(cls, model_dir, _rows("video", media), tmp / name, steps, **sampling)
        results[name] = {"decodes_per_step": trainer.media_counts["video_decodes"] / steps, "step_s": step}
    figures["video_decodes_per_step"] = {k: v["decodes_per_step"] for k, v in results.items()}
    figures["video_decode_ratio"] = results["per_row"]["decodes_per_step"] / results["once_per_video"]["decodes_per_step"]
    figures["video_step_time_ratio_per_row_over_once"] = results["per_row"]["step_s"] / results["once_per_video"]["step_s"]
    return figures


def _print(figures: dict) -> None:
    print("| measure | value |\n|---|---|")
    for key, value in figures.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v:.3g}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.3f}"
        print(f"| {key} | {value} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    _print(main(parser.parse_args().steps))
    sys.exit(0)
