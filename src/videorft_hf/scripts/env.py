"""Prints the environment a bug report needs: platform, package versions, accelerators and video backends.

    videorft env
    python -m videorft_hf.scripts.env
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import shutil
import sys

PACKAGES = (
    "videorft_hf",
    "torch",
    "torchvision",
    "transformers",
    "trl",
    "datasets",
    "huggingface-hub",
    "peft",
    "accelerate",
    "safetensors",
    "evaluate",
    "bitsandbytes",
    "deepspeed",
    "vllm",
    "decord",
    "av",
    "torchcodec",
    "qwen-vl-utils",
)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def collect() -> dict[str, str]:
    """Returns the environment facts as an ordered dict of strings."""
    info = {"Platform": platform.platform(), "Python version": sys.version.split()[0]}
    for package in PACKAGES:
        info[f"{package} version"] = _version(package)
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["Accelerators"] = ", ".join(names)
        else:
            info["Accelerators"] = "none (CPU)"
    except ImportError:
        info["Accelerators"] = "unknown (torch not installed)"
    from videorft_hf.video.loading import _resolve_backend, available_backends

    info["Video backends"] = ", ".join(available_backends()) or "none"
    info["Default video backend"] = _resolve_backend("auto")
    info["System FFmpeg"] = shutil.which("ffmpeg") or "not found (torchcodec needs it)"
    return info


def make_parser(subparsers=None, prog: str | None = "videorft env") -> argparse.ArgumentParser:
    """The parser of `videorft env` (no options), registered on `subparsers` when given."""
    from videorft_hf.cli import command_parser

    return command_parser(subparsers, "env", prog, __doc__, "Print the versions and video backends of this machine")


def main(argv: list[str] | None = None) -> int:
    make_parser().parse_args(argv)
    print("\nCopy-paste the following information when you file an issue:\n")
    for key, value in collect().items():
        print(f"- {key}: {value}")
    print()
    return 0


if __name__ == "__main__":
    from videorft_hf.cli import run_command

    sys.exit(run_command(main, sys.argv[1:], "videorft env"))
