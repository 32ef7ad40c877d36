"""`videorft eval`'s input pipeline: media decoding overlapped with generation, and decoded once per video.

A VSI-Bench-like benchmark (many questions about each video) is evaluated with a stand-in backend that spends a
fixed time per batch, as a GPU would on generation, so what is measured is the pipeline around it. The reference path
is what the research release's evaluation did: decode every sample's video inline, before its generation, with no
reuse across questions (`--decode_workers 0 --frame_cache_bytes 0`). Ours: the next batches decode in threads while
the current one generates, and a frame cache serves repeated videos. Both use the paper's evaluation preset
(32 frames at up to 256*28*28 pixels). Figures are printed as ratios against the reference path.

    HF_HUB_OFFLINE=1 python benchmarks/bench_eval.py [--videos 4] [--questions 6] [--generate_seconds 0.3]

`main(argv)` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from videorft_hf.evaluation import EvalArguments, run_evaluation  # noqa: E402
from videorft_hf.testing import build_tiny_processor, build_tiny_vlm_config, write_video_questions  # noqa: E402


class SleepingGenerator:
    """Spends `seconds` per batch, like generation on an accelerator, and answers "A"."""

    def __init__(self, seconds: float):
        self.processor = build_tiny_processor("qwen2_5_vl")
        self.model_config = build_tiny_vlm_config("qwen2_5_vl")
        self.seconds = seconds

    def prepare(self, sample):
        sample.inputs = None

    def generate(self, samples):
        time.sleep(self.seconds)
        return ["<answer>A</answer>"] * len(samples)


def _write_benchmark(root: str, videos: int, questions: int) -> str:
    records = write_video_questions(root, videos, questions)
    # Questions about one video are spread out, as in VSI-Bench files.
    records.sort(key=lambda r: (r["problem_id"] % questions, r["problem_id"]))
    path = os.path.join(root, "eval_vsibench.json")
    with open(path, "w") as stream:
        json.dump(records, stream)
    return path


def _time_run(root: str, benchmark: str, name: str, seconds: float, batch_size: int, **overrides) -> float:
    args = EvalArguments(
        benchmarks=[benchmark],
        media_root=root,
        output_dir=os.path.join(root, name),
        batch_size=batch_size,
        cache_dir=os.path.join(root, "cache"),
        progress=False,
        **overrides,
    )
    start = time.perf_counter()
    run_evaluation(args, generator=SleepingGenerator(seconds))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--questions", type=int, default=6, help="Questions per video.")
    parser.add_argument("--generate_seconds", type=float, default=0.3, help="Stand-in generation time per batch.")
    parser.add_argument("--batch_size", type=int, default=4)
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        benchmark = _write_benchmark(root, options.videos, options.questions)
        _time_run(root, benchmark, "warmup", 0.0, options.batch_size, max_samples=2)
        run = dict(seconds=options.generate_seconds, batch_size=options.batch_size)
        reference = _time_run(root, benchmark, "reference", decode_workers=0, frame_cache_bytes=0, **run)
        threads = _time_run(root, benchmark, "threads", decode_workers=2, frame_cache_bytes=0, **run)
        ours = _time_run(root, benchmark, "ours", decode_workers=2, **run)
    samples = options.videos * options.questions
    batches = -(-samples // options.batch_size)
    figures = {
        "samples": samples,
        "generation_floor_s": round(batches * options.generate_seconds, 3),
        "reference_s": round(reference, 3),
        "decode_threads_s": round(threads, 3),
        "decode_threads_and_cache_s": round(ours, 3),
        "speedup_threads": round(reference / threads, 2),
        "speedup_threads_and_cache": round(reference / ours, 2),
    }
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
