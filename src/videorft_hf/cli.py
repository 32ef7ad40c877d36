"""`videorft <command>`: the package's console entry point, and the boundary where errors meet the user.

Each training or evaluation command is a module in `videorft_hf.scripts` with a `main(argv)` function, so that
it also runs as `accelerate launch -m videorft_hf.scripts.<command> ...`; this file dispatches to it through
`run_command`, which every command module's `__main__` uses as well.

    videorft env                # versions and video backends, for bug reports
    videorft grpo --help        # a command's options (read from the shipped help, without importing torch)

Errors: an error that bad input causes (see `is_expected_error`) is printed as one line,
`videorft <command>: error: <Type>: <message naming the file, row or field>`, with exit status 1, or 2 for a value a
config refuses (flags and recipes); `--debug` shows the traceback instead. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

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
DEBUG_FLAG = "--debug"
# Where an error raised by a library means the user named something that does not exist (a model path or Hub id).
_LOOKUP_MODULES = ("huggingface_hub.", "transformers.utils.hub", "transformers.dynamic_module_utils")


def _usage() -> str:
    lines = ["usage: videorft <command> [options] [--debug]", "", "commands:"]
    lines += [f"  {name:<16}{help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += [
        "",
        "Run `videorft <command> --help` for a command's options. Errors are one line naming the file, row or field;",
        "--debug shows their traceback.",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ errors
def _raised_in(error: BaseException) -> tuple[str, str]:
    """The module and the function that raised `error` (the last frame of its traceback)."""
    tb = error.__traceback__
    if tb is None:
        return "", ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")), tb.tb_frame.f_code.co_name


def is_expected_error(error: BaseException) -> bool:
    """Whether `error` is one that bad input causes (printed as one line) rather than a bug (printed with its
    traceback).

    Expected:

    - the package's typed errors (every class of `videorft_hf` that derives from `ValueError`, `OSError` or
      `RuntimeError`: media, data, recipe and publishing errors, README "Bad input");
    - a `ValueError`, `OSError` or `RuntimeError` raised by this package's own code: a message written for the user;
    - a `ValueError` raised by a config's `__post_init__` (trl's and transformers' configs check their values there);
    - an `OSError` from huggingface_hub or transformers' file lookup: a model or processor path or Hub id that does not
      exist (or is not cached, offline).

    Args:
        error: The exception a command raised.

    Returns:
        True when the error is expected.

    Example:
        >>> from videorft_hf.video import VideoNotFoundError
        >>> is_expected_error(VideoNotFoundError("clip.mp4: file not found")), is_expected_error(KeyError("x"))
        (True, False)
    """
    if not isinstance(error, (ValueError, OSError, RuntimeError)):
        return False
    if type(error).__module__.startswith("videorft_hf."):
        return True
    module, function = _raised_in(error)
    if module.startswith("videorft_hf."):
        return True
    if isinstance(error, ValueError) and function == "__post_init__":
        return True
    return isinstance(error, OSError) and module.startswith(_LOOKUP_MODULES)


def describe_error(error: BaseException) -> str:
    """`<Type>: <message>` on one line. An error re-raised from a DataLoader worker carries the worker's traceback in
    its message; its last line is the original error."""
    message = str(error).strip()
    if "Original Traceback" in message:
        message = message.splitlines()[-1].strip()
        message = message.split(": ", 1)[1] if message.startswith(type(error).__name__ + ":") else message
    message = " ".join(message.split()) if "\n" in message else message
    if getattr(error, "exit_status", None) == 2:  # a refused flag or recipe value: said as a usage error
        return message
    return f"{type(error).__name__}: {message}"


def take_debug_flag(argv: Sequence[str]) -> tuple[list[str], bool]:
    """`argv` without `--debug`, and whether it was there. transformers' training option `--debug <what>` (one of its
    `DebugOption` values) is left in place: only a bare `--debug` (last, or followed by another flag) is taken."""
    argv = list(argv)
    for index, word in enumerate(argv):
        if word == DEBUG_FLAG and (index + 1 == len(argv) or argv[index + 1].startswith("-")):
            return argv[:index] + argv[index + 1 :], True
    return argv, False


def run_command(main: Callable[[list[str]], int | None], argv: Sequence[str], prog: str) -> int:
    """Runs a command's `main(argv)` and turns an expected error into one line on stderr and an exit status.

    Args:
        main: The command's `main`.
        argv: Its arguments; a bare `--debug` among them shows tracebacks instead (and is removed).
        prog: The command's name in messages, such as `"videorft grpo"`.

    Returns:
        The command's exit status: its own, 1 for an expected error, 2 for a refused flag or recipe value.

    Example:
        >>> run_command(lambda argv: 0, ["--debug"], "videorft env")
        0
    """
    argv, debug = take_debug_flag(argv)
    if debug:
        return int(main(argv) or 0)
    try:
        return int(main(argv) or 0)
    except Exception as error:  # noqa: BLE001  (sorted below: a bug keeps its traceback)
        if not is_expected_error(error):
            raise
        print(f"{prog}: error: {describe_error(error)}", file=sys.stderr)
        print(f"(run again with {DEBUG_FLAG} to see the traceback)", file=sys.stderr)
        return getattr(error, "exit_status", 1)


# ------------------------------------------------------------------------------------------------ parsers
def command_parser(subparsers, name: str, prog: str, doc: str | None, help: str) -> argparse.ArgumentParser:
    """The plain `argparse` parser of a command without dataclasses (`env`, `demo`, `push`): registered as `name` on
    `subparsers` when given (trl's CLI pattern, as every command's `make_parser(subparsers=None)`), else standalone.
    It lives here, not with `VideoRFTParser`, so that those commands' `--help` imports neither trl nor torch.
    """
    kwargs = dict(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    if subparsers is not None:
        return subparsers.add_parser(name, help=help, **kwargs)
    return argparse.ArgumentParser(prog=prog, **kwargs)


# ------------------------------------------------------------------------------------------------ dispatch
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"videorft: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if "-h" in rest or "--help" in rest:
        from .scripts.help_cache import cached_help

        text = cached_help(command)  # None when the shipped help is not this installation's: then argparse's
        if text is not None:
            sys.stdout.write(text)
            return 0
    module = importlib.import_module(f"videorft_hf.scripts.{COMMANDS[command][0]}")
    return run_command(module.main, rest, f"videorft {command}")


if __name__ == "__main__":
    sys.exit(main())
