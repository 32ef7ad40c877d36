"""`videorft <command>`: the package's console entry point.

Each training or evaluation command is a module in `videorft_hf.scripts` with a `main(argv)` function, so that
it also runs as `accelerate launch -m videorft_hf.scripts.<command> ...`; this file only dispatches.

    videorft env                # versions and video backends, for bug reports
"""

from __future__ import annotations

import importlib
import sys

# command -> (module in videorft_hf.scripts, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "The whole recipe end to end on a laptop CPU in minutes (VideoRFT-mini, tiny models)."),
    "env": ("env", "Print the versions and video backends a bug report needs."),
    "eval": ("eval", "Evaluate a checkpoint on the paper's video benchmarks (resumable)."),
    "grpo": ("grpo", "Stage two: GRPO on video with the VideoRFT rewards (VideoGRPOTrainer)."),
    "sft": ("sft", "Supervised fine-tuning on chain-of-thought records (stage one of the recipe)."),
    "prepare-frames": ("prepare_frames", "Decode every video of a dataset once into a frame store (resumable)."),
    "push": ("push", "Publish a checkpoint or a built dataset to the Hub with its card (--dry-run: folder only)."),
    "curate": ("curate", "Build chain-of-thought records from video QA pairs (the paper's data engine, resumable)."),
}


def _usage() -> str:
    lines = ["usage: videorft <command> [options]", "", "commands:"]
    lines += [f"  {name:<16}{help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "Run `videorft <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"videorft: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"videorft_hf.scripts.{COMMANDS[command][0]}")
    result = module.main(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
