"""`videorft curate`: video question-answer records into verified chain-of-thought records (the paper's data engine).

Four stages (describe, reason, revise, filter; see `videorft_hf.curation.pipeline`), each model stage served by an
OpenAI-compatible endpoint or a local transformers model. Resumable: rerun the same command after an interruption and
it continues where it stopped, redoing nothing. API keys come from environment variables only.

    # one vision-language model behind vLLM for describe and revise, a reasoning model for reason
    vllm serve Qwen/Qwen2.5-VL-72B-Instruct --port 8000 &
    export DEEPSEEK_API_KEY=...
    videorft curate --input qa.jsonl --media_root /data/videos --output_dir curated \\
        --base_url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-VL-72B-Instruct \\
        --reason_base_url https://api.deepseek.com/v1 --reason_model deepseek-reasoner \\
        --reason_api_key_env DEEPSEEK_API_KEY --concurrency 16
    # transformers serve (pip install 'videorft_hf[serve]'): frames go as image_url parts
    transformers serve Qwen/Qwen2.5-VL-7B-Instruct --host 127.0.0.1 --port 8000 &
    videorft curate --input qa.jsonl --output_dir curated --model Qwen/Qwen2.5-VL-7B-Instruct
    # a local model in this process for every stage
    videorft curate --input qa.jsonl --output_dir curated --backend transformers --model Qwen/Qwen2.5-VL-7B-Instruct
    # settings from a YAML file (flags override it)
    videorft curate --config curate.yaml
    python -m videorft_hf.scripts.curate --help

Then build the dataset: `python dataset_scripts/videorft_cot_102k/build.py --input curated/cot.jsonl --output out`.
It prints the summary table at the end and exits with 1 when some records are unfinished (rerun to retry them).
"""

from __future__ import annotations

import logging
import sys

from videorft_hf.curation import CurationArguments, format_summary, run_curation
from videorft_hf.scripts.arguments import VideoRFTParser


def make_parser(subparsers=None, prog: str | None = "videorft curate"):
    """Returns the `VideoRFTParser` (a trl `TrlParser`) for `CurationArguments` (`--config file.yaml` sets them, flags override).

    Args:
        subparsers: an `argparse` subparsers action to register a `curate` command on.
        prog: program name in the usage line.

    Returns:
        The parser.

    Example:
        >>> argv = ["--input", "qa.jsonl", "--model", "m", "--concurrency", "4"]
        >>> (args,) = make_parser().parse_args_and_config(argv)
        >>> args.concurrency, args.stage_setting("reason", "model")
        (4, 'm')
    """
    return VideoRFTParser.for_command(subparsers, "curate", (CurationArguments,), prog, __doc__, "VideoRFT CoT curation")


def main(argv: list[str] | None = None) -> int:
    """Runs `videorft curate` with `argv` (default: the command line); prints the summary table.

    Returns:
        0 when every record is kept or rejected, 1 when some are unfinished (failed requests: rerun to retry).
    """
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("videorft_hf.curation").setLevel(logging.INFO)  # per-stage counts and retries
    (args,) = make_parser().parse_args_and_config(argv)
    summary = run_curation(args)
    print(format_summary(summary))
    print(f"CoT records: {args.output_dir}/cot.jsonl; rejections: {args.output_dir}/rejected.jsonl")
    if summary["unfinished"]:
        print(
            f"{summary['unfinished']} records are unfinished (failed requests); rerun the same command to retry them."
        )
        return 1
    return 0


if __name__ == "__main__":
    from videorft_hf.cli import run_command

    sys.exit(run_command(main, sys.argv[1:], "videorft curate"))
