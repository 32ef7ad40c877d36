"""`videorft eval`: a checkpoint (or a base model plus a LoRA adapter) on the paper's video benchmarks.

Benchmark files use the Video-R1-eval record schema; prompts, frame sampling (32 frames at 256*28*28) and decoding
(temperature 0.1, top_p 0.001, 1024 new tokens) follow the paper. The run is resumable: rerun the same command after
an interruption and it continues where it stopped. See `videorft_hf.evaluation` for the output folder.

    # the six benchmarks of the paper, with transformers generate (CPU or GPU)
    videorft eval --model_name_or_path QiWang98/VideoRFT --media_root /data/Video-R1-eval \\
        --benchmarks /data/Video-R1-eval/eval_*.json --output_dir eval/VideoRFT --batch_size 8
    # a LoRA run on the base model, with vLLM (pip install 'videorft_hf[vllm]')
    videorft eval --model_name_or_path Qwen/Qwen2.5-VL-7B-Instruct --adapter_path outputs/grpo-lora \\
        --benchmarks MVBench=/data/eval/eval_mvbench.json --media_root /data/eval --backend vllm --batch_size 64
    # settings from a YAML file (flags override it)
    videorft eval --config recipes/eval/videorft.yaml --model_name_or_path outputs/grpo
    python -m videorft_hf.scripts.eval --help

It prints the results table (`results.md`) at the end.
"""

from __future__ import annotations

import logging
import sys

from videorft_hf.evaluation import EvalArguments, format_results_markdown, run_evaluation
from videorft_hf.scripts.arguments import VideoRFTParser


def make_parser(subparsers=None, prog: str | None = "videorft eval"):
    """Returns the `VideoRFTParser` (a trl `TrlParser`) for `EvalArguments` (`--config file.yaml` sets them, flags override).

    Args:
        subparsers: an `argparse` subparsers action to register an `eval` command on.
        prog: program name in the usage line.

    Example:
        >>> (args,) = make_parser().parse_args_and_config(["--benchmarks", "mvbench.json", "--temperature", "0"])
        >>> args.temperature, args.video_sampling_preset
        (0.0, 'videorft-eval')
    """
    return VideoRFTParser.for_command(subparsers, "eval", (EvalArguments,), prog, __doc__, "VideoRFT evaluation")


def main(argv: list[str] | None = None) -> int:
    """Runs `videorft eval` with `argv` (default: the command line) and prints the results table."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    (args,) = make_parser().parse_args_and_config(argv)
    aggregate = run_evaluation(args)
    print(format_results_markdown(aggregate))
    if aggregate["num_errors"]:
        print(f"{aggregate['num_errors']} samples have errors; see the `error` fields in {args.output_dir}.")
    unscored = [name for name, s in aggregate["benchmarks"].items() if s["num_errors"] and not s["num_scored"]]
    if unscored:
        print(
            f"No sample of {', '.join(unscored)} could be scored: every one has missing or undecodable media. "
            "Check --media_root and the files.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    from videorft_hf.cli import run_command

    sys.exit(run_command(main, sys.argv[1:], "videorft eval"))
