"""The argument parser of every `videorft` command that reads dataclasses: trl's `TrlParser`, made to help.

`VideoRFTParser` is a `trl.TrlParser` (so `--config recipe.yaml` sets values and flags override them) that

- explains `--config` first, then shows the command's description and examples (its module docstring), with a
  one-line usage naming `--config`;
- lists the package's own options first, then trl's and transformers' (grouped by the dataclass that defines them);
- describes each `--no_<flag>` as turning `--<flag>` off;
- rejects abbreviated flags (`--max_step` is not `--max_steps`);
- answers an unknown flag or recipe key with the nearest known name, in two lines, not the whole usage;
- names the recipe file in every error a recipe causes: a file that is not YAML (with its line and column), a value
  of the wrong type or outside its choices, and a value the config refuses (`ArgumentValueError`, naming the recipe
  keys the refusal mentions);
- defaults `--frame_store` to `$VIDEORFT_FRAME_STORE` (a recipe key or the flag overrides it). The environment is read
  here, by the commands, only: the package reads the store its config names.

    parser = VideoRFTParser((VideoRFTScriptArguments, VideoGRPOConfig, ModelConfig), prog="videorft grpo", doc=__doc__)
    script_args, training_args, model_args = parser.parse_args_and_config()
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

from trl import TrlParser

from videorft_hf.cli import command_parser  # noqa: F401  (the parser of the commands without dataclasses)

OWN_MODULE_PREFIX = "videorft_hf."
# What every dataclass command's help says first.
CONFIG_HELP = """\
--config RECIPE.yaml sets any option below from a YAML file (its keys are the option names without --); flags given
on the command line override it. Abbreviated flags are rejected. --debug shows the traceback of an error."""


class ArgumentValueError(ValueError):
    """A command's config refused a value given by a flag or a recipe file; the message names the recipe file and the
    recipe keys the refusal mentions. `videorft` prints it as a usage error (exit status 2)."""

    exit_status = 2


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's examples as written and shows each option's default."""


def nearest(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to a misspelled one, or None when nothing is close.

    Example:
        >>> nearest("num_generation", ["num_generations", "max_steps"])
        'num_generations'
    """
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


class VideoRFTParser(TrlParser):
    """`trl.TrlParser` with the command's description, its own options first and helpful errors (see module doc).

    Args:
        dataclass_types: The argument dataclasses, as for `TrlParser`.
        prog: The command, such as `"videorft grpo"`.
        doc: The command module's docstring: its first line is the summary, the rest (examples) follows.
        **kwargs: Passed to `TrlParser`.
    """

    def __init__(self, dataclass_types, prog: str, doc: str | None = None, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        kwargs.setdefault("usage", f"{prog} [--config RECIPE.yaml] [--<option> VALUE ...]")
        description = "\n\n".join(part for part in (CONFIG_HELP, (doc or "").strip()) if part)
        super().__init__(dataclass_types, prog=prog, description=description, allow_abbrev=False, **kwargs)
        self._group_by_origin()
        self._environment_defaults()
        for action in self._actions:
            if isinstance(action, argparse._StoreFalseAction) and action.option_strings[0].startswith("--no_"):
                action.help = f"Turn off --{action.dest}."
                action.default = argparse.SUPPRESS  # not shown as "(default: False)"; --<flag> holds the default

    def _environment_defaults(self) -> None:
        """`--frame_store` defaults to `$VIDEORFT_FRAME_STORE` (`--config` and the flag override it)."""
        from videorft_hf.frame_store import STORE_ENV

        path = os.environ.get(STORE_ENV)
        if path:
            for action in self._actions:
                if action.dest == "frame_store":
                    action.default = path

    @classmethod
    def for_command(cls, subparsers, name: str, dataclass_types, prog: str | None, doc: str | None, help: str):
        """A command's parser, as every `make_parser(subparsers=None)` returns it (trl's CLI pattern): registered as
        `name` on `subparsers` (whose parser class reads `dataclass_types`) when given, else a `VideoRFTParser`."""
        if subparsers is not None:
            return subparsers.add_parser(name, help=help, dataclass_types=dataclass_types)
        return cls(dataclass_types, prog=prog, doc=doc)

    # ------------------------------------------------------------------------------------------------ help
    def _group_by_origin(self) -> None:
        """Moves each option into a group named after where its field is defined: this package first."""
        origin: dict[str, str] = {}
        for dtype in self.dataclass_types:
            for cls in reversed(dtype.__mro__):  # the most derived class that declares a field wins
                if dataclasses.is_dataclass(cls):
                    for name in cls.__dict__.get("__annotations__", {}):
                        origin[name] = "videorft" if cls.__module__.startswith(OWN_MODULE_PREFIX) else cls.__module__
        groups: dict[str, argparse._ArgumentGroup] = {}
        titles = {
            "videorft": "VideoRFT options",
            "trl": "trl options",
            "transformers": "transformers training options",
        }
        for action in list(self._optionals._group_actions):
            where = origin.get(action.dest)
            if where is None:
                continue  # -h
            key = "videorft" if where == "videorft" else where.split(".")[0]
            title = titles.get(key, f"{key} options")
            if title not in groups:
                groups[title] = self.add_argument_group(title)
            self._optionals._group_actions.remove(action)
            groups[title]._group_actions.append(action)
        order = [titles["videorft"], titles["trl"], titles["transformers"]]
        self._action_groups.sort(key=lambda group: order.index(group.title) + 2 if group.title in order else (
            0 if group in (self._positionals, self._optionals) else len(order) + 2
        ))

    # ------------------------------------------------------------------------------------------------ errors
    def error(self, message: str):
        """Two lines (usage and the error with a suggestion), not the usage of every option."""
        self.exit(2, f"usage: {self.format_usage().split(': ', 1)[-1].strip()}\n{self.prog}: error: {message}\n"
                     f"Run `{self.prog} --help` for the options.\n")

    def _known_options(self) -> list[str]:
        return [option for action in self._actions for option in action.option_strings if option.startswith("--")]

    def parse_args_and_config(
        self,
        args: Iterable[str] | None = None,
        return_remaining_strings: bool = False,
        fail_with_unknown_args: bool = True,
        separate_remaining_strings: bool = False,
    ):
        """As `TrlParser.parse_args_and_config`; an unknown flag or recipe key is an error naming the nearest known
        one, raised before any value is checked, and every error a recipe causes names the recipe file.

        Raises:
            ArgumentValueError: a config refused a value (from a flag or the recipe).
        """
        args = list(sys.argv[1:] if args is None else args)
        known = self._known_options()
        if not return_remaining_strings:
            for word in args:
                flag = word.split("=", 1)[0]
                if flag.startswith("--") and flag != "--config" and flag not in known:
                    suggestion = nearest(flag, known)
                    self.error(f"unknown flag {flag}" + (f"; did you mean {suggestion}?" if suggestion else ""))
        path, recipe = None, {}
        if "--config" in args:
            index = args.index("--config")
            if index + 1 >= len(args):
                self.error("--config needs a recipe file: --config RECIPE.yaml")
            path = args[index + 1]
            recipe = self._read_recipe(path)
            if fail_with_unknown_args and not return_remaining_strings:
                self._check_recipe_keys(path, recipe, [option[2:] for option in known])
            self._check_recipe_values(path, recipe, args)
        try:
            return super().parse_args_and_config(
                args, return_remaining_strings, fail_with_unknown_args, separate_remaining_strings
            )
        except (ValueError, TypeError) as error:  # a config's __post_init__ refused a value
            if isinstance(error, ArgumentValueError):
                raise
            raise ArgumentValueError(self._where(str(error), path, recipe, args)) from error

    def _read_recipe(self, path: str) -> dict[str, Any]:
        """The recipe file as a mapping; a missing file, a folder, invalid YAML or a non-mapping is a usage error."""
        import yaml

        if not os.path.isfile(path):
            what = "is a directory" if os.path.isdir(path) else "does not exist"
            self.error(f"the recipe file {path} {what} (relative paths start at {os.getcwd()})")
        try:
            with open(path, encoding="utf-8") as stream:
                recipe = yaml.safe_load(stream)
        except yaml.YAMLError as error:
            parts = []
            for text, mark in (
                (getattr(error, "context", None), getattr(error, "context_mark", None)),
                (getattr(error, "problem", None), getattr(error, "problem_mark", None)),
            ):
                if text:
                    parts.append(text + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""))
            self.error(f"the recipe file {path} is not valid YAML: {', '.join(parts) or str(error).splitlines()[0]}")
        if recipe is None:
            return {}
        if not isinstance(recipe, dict):
            self.error(f"the recipe file {path} must hold a YAML mapping of option names to values")
        return recipe

    def _check_recipe_keys(self, path: str, recipe: dict, known: list[str]) -> None:
        unknown = [str(key) for key in recipe if key != "env" and str(key) not in known]
        if unknown:
            hints = [f"{key!r}" + (f" (did you mean {s!r}?)" if (s := nearest(key, known)) else "") for key in unknown]
            self.error(f"unknown key{'s' if len(unknown) > 1 else ''} in the recipe file {path}: {', '.join(hints)}")

    def _check_recipe_values(self, path: str, recipe: dict, args: list[str]) -> None:
        """Recipe values argparse would convert (strings) are converted here, so that a bad one names the recipe file
        and its key; a value that a flag overrides is not checked."""
        given = {word.split("=", 1)[0][2:] for word in args if word.startswith("--")}
        actions = {action.dest: action for action in self._actions}
        for key, value in recipe.items():
            action = actions.get(str(key))
            if action is None or key in given or not isinstance(value, str):
                continue
            converted = value
            if callable(action.type):
                try:
                    converted = action.type(value)
                except (TypeError, ValueError, argparse.ArgumentTypeError):
                    what = getattr(action.type, "__name__", "value")
                    self.error(f"the recipe file {path}: {key}: {value!r} is not a valid {what}")
            if action.choices is not None and converted not in action.choices:
                choices = ", ".join(str(getattr(choice, "value", choice)) for choice in action.choices)
                self.error(f"the recipe file {path}: {key}: {value!r} is not one of {choices}")

    @staticmethod
    def _where(message: str, path: str | None, recipe: dict, args: list[str]) -> str:
        """`message` with where the values it names came from: the recipe file's keys, or the flags."""
        named = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", message))
        flags = [word.split("=", 1)[0][2:] for word in args if word.startswith("--") and word != "--config"]
        from_flags = [f"--{name}" for name in dict.fromkeys(flags) if name in named]
        from_recipe = [f"{key}: {recipe[key]!r}" for key in recipe if key in named and key not in flags]
        parts = []
        if from_recipe:
            parts.append(f"the recipe file {path} sets {', '.join(from_recipe)}")
        if from_flags:
            parts.append(f"the command line sets {', '.join(from_flags)}")
        if not parts and path is not None:
            parts.append(f"values from the recipe file {path} and the command line")
        return f"{message} ({'; '.join(parts)})" if parts else message
