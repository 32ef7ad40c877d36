"""`videorft <command> --help` without importing torch: the shipped help of the commands that read dataclasses.

The options of `sft`, `grpo`, `eval`, `curate` and `prepare-frames` come from dataclasses that extend trl's and
transformers' configs, and importing those imports torch (seconds). So the package ships each command's help as a
spec (`scripts/help/<command>.json`): the parser's groups and, per option, its flags, metavar and help text with the
default filled in. `videorft <command> --help` rebuilds a plain `argparse` parser from the spec and prints its help:
the same text as the full parser's, wrapped to the terminal the same way.

A spec is used only when it describes this installation: it records the versions of trl and transformers and a hash
of every file of this package that the help is built from (the command's module, the parser, the dataclasses'
modules). When one differs (another transformers release, an edited config), or when `$VIDEORFT_FRAME_STORE` sets a
default, `cached_help` returns None and the command builds the full parser as before. `tests/test_cli.py` checks that
the shipped specs are current and render the full parser's help; after changing an option, regenerate them:

    python -m videorft_hf.scripts.help_cache      # or: make help-specs
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import json
import os
import sys
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # src/videorft_hf
SPEC_DIR = Path(__file__).resolve().parent / "help"
# command -> its module in videorft_hf.scripts (the commands whose options come from dataclasses)
SPEC_COMMANDS: dict[str, str] = {
    "sft": "sft",
    "grpo": "grpo",
    "eval": "eval",
    "curate": "curate",
    "prepare-frames": "prepare_frames",
}
# Distributions whose dataclasses add options; their versions are part of a spec's key.
LIBRARIES = ("trl", "transformers")
FRAME_STORE_ENV = "VIDEORFT_FRAME_STORE"  # `frame_store.STORE_ENV`, read here without importing the store


# ------------------------------------------------------------------------------------------------ reading
def cached_help(command: str) -> str | None:
    """The help text of `videorft <command>` from its shipped spec, or None when the spec is missing or stale.

    Args:
        command: A command name, such as `"grpo"`.

    Returns:
        The text `--help` prints, or None (the caller then builds the full parser).

    Example:
        >>> text = cached_help("grpo")  # doctest: +SKIP
        >>> text.startswith("usage: videorft grpo [--config RECIPE.yaml]")  # doctest: +SKIP
        True
    """
    if command not in SPEC_COMMANDS or os.environ.get(FRAME_STORE_ENV):
        return None
    path = SPEC_DIR / f"{SPEC_COMMANDS[command]}.json"
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if spec.get("key") != current_key(spec.get("key", {}).get("sources", {})):
        return None
    return render(spec)


def current_key(sources: dict[str, str]) -> dict[str, Any]:
    """The key a spec must hold to describe this installation: library versions and the hashes of `sources` (paths
    relative to the package folder) as they are now."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"versions": versions, "sources": {path: _file_hash(PACKAGE_ROOT / path) for path in sorted(sources)}}


def _file_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def render(spec: dict[str, Any]) -> str:
    """The help text of a spec: a plain `argparse` parser with the spec's groups and options formats it."""
    parser = argparse.ArgumentParser(
        prog=spec["prog"],
        usage=spec["usage"],
        description=spec["description"],
        epilog=spec["epilog"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
        allow_abbrev=False,
    )
    parser._action_groups.clear()  # the spec lists every group, the default ones included, in order
    for group_spec in spec["groups"]:
        group = parser.add_argument_group(group_spec["title"], group_spec["description"])
        for action in group_spec["actions"]:
            help_text = action["help"].replace("%", "%%")  # already expanded; argparse %-formats it again
            if action["nargs"] == 0:
                group.add_argument(*action["option_strings"], dest=action["dest"], action="store_true", help=help_text)
            else:
                group.add_argument(
                    *action["option_strings"],
                    dest=action["dest"],
                    nargs=action["nargs"],
                    metavar=action["metavar"],
                    help=help_text,
                )
    return parser.format_help()


# ------------------------------------------------------------------------------------------------ writing
def build_spec(command: str) -> dict[str, Any]:
    """The spec of a command, from its full parser (this imports trl, transformers and torch)."""
    module = importlib.import_module(f"videorft_hf.scripts.{SPEC_COMMANDS[command]}")
    saved = os.environ.pop(FRAME_STORE_ENV, None)  # the shipped help shows the defaults without the environment
    try:
        parser = module.make_parser()
    finally:
        if saved is not None:
            os.environ[FRAME_STORE_ENV] = saved
    return spec_of(parser, _sources(module, parser))


def spec_of(parser: argparse.ArgumentParser, sources: list[str]) -> dict[str, Any]:
    """The spec of a parser: what its help shows, per group and option, with each option's help expanded."""
    formatter = parser._get_formatter()
    groups = []
    for group in parser._action_groups:
        actions = []
        for action in group._group_actions:
            if action.help == argparse.SUPPRESS:
                continue
            metavar = None
            if action.nargs != 0:
                metavar = formatter._metavar_formatter(action, action.dest.upper())(1)[0]
            actions.append({
                "option_strings": list(action.option_strings),
                "dest": action.dest,
                "nargs": action.nargs,
                "metavar": metavar,
                "help": formatter._expand_help(action),
            })
        groups.append({"title": group.title, "description": group.description, "actions": actions})
    return {
        "prog": parser.prog,
        "usage": parser.usage,
        "description": parser.description,
        "epilog": parser.epilog,
        "key": current_key({path: "" for path in sources}),
        "groups": groups,
    }


def _sources(module, parser) -> list[str]:
    """The files of this package the help is built from: the command's module, the parser and this module, and the
    modules that define the command's dataclasses (the library ones are keyed by version)."""
    import dataclasses
    import inspect

    files = {inspect.getsourcefile(module), inspect.getsourcefile(sys.modules[__name__])}
    files.add(inspect.getsourcefile(importlib.import_module("videorft_hf.scripts.arguments")))
    for dtype in getattr(parser, "dataclass_types", ()):
        for cls in dtype.__mro__:
            if dataclasses.is_dataclass(cls) and cls.__module__.startswith("videorft_hf."):
                files.add(inspect.getsourcefile(cls))
    return sorted(Path(path).resolve().relative_to(PACKAGE_ROOT).as_posix() for path in files)


def write_specs(commands: list[str] | None = None) -> list[Path]:
    """Writes the spec of each command (default: all) to `scripts/help/`, and returns the paths."""
    SPEC_DIR.mkdir(exist_ok=True)
    paths = []
    for command in commands or list(SPEC_COMMANDS):
        path = SPEC_DIR / f"{SPEC_COMMANDS[command]}.json"
        path.write_text(json.dumps(build_spec(command), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_specs(sys.argv[1:] or None):
        print(f"wrote {written}")
