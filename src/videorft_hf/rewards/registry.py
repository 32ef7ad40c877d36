"""The rewards a script names (`--reward_funcs`), built from its arguments by `get_reward_funcs(script_args)`.

As in open-r1, rewards are built when a script asks for them, never at import: the semantic-consistency reward finds
its encoder from `script_args.semantic_model_name_or_path` then, so a misspelled model fails before anything loads.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from .accuracy import accuracy_reward
from .completions import RewardFunc
from .format import format_reward
from .semantic import DEFAULT_SEMANTIC_MODEL, get_semantic_consistency_reward

# The rewards of the paper, used when the script arguments name none.
DEFAULT_REWARD_FUNCS = ("format_reward", "accuracy_reward", "semantic_consistency_reward")


def _semantic_consistency_reward(script_args: Any) -> RewardFunc:
    model = getattr(script_args, "semantic_model_name_or_path", None) or DEFAULT_SEMANTIC_MODEL
    return get_semantic_consistency_reward(model_name_or_path=model)


# Reward name -> what builds it from the script arguments (the name is the built reward's `__name__`, which trl logs
# as `rewards/<name>/mean`). Calling an entry builds the reward; importing this builds nothing.
REWARD_FUNCS: dict[str, Callable[[Any], RewardFunc]] = {
    "format_reward": lambda script_args: format_reward,
    "accuracy_reward": lambda script_args: accuracy_reward,
    "semantic_consistency_reward": _semantic_consistency_reward,
}


def _import_reward(name: str) -> RewardFunc:
    """A reward given as a dotted import path, imported with the current directory on `sys.path` (as trl does)."""
    module_path, _, attribute = name.rpartition(".")
    func = None
    if module_path:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            func = getattr(importlib.import_module(module_path), attribute, None)
        except ImportError:
            func = None
    if not callable(func):
        raise ValueError(
            f"Could not load reward function {name!r}. Expected one of {list(REWARD_FUNCS)} or an importable "
            "dotted path such as 'my_pkg.rewards.my_reward'."
        )
    return func


def get_reward_funcs(script_args: Any) -> list[RewardFunc]:
    """Builds the rewards named by `script_args.reward_funcs`, in order: `REWARD_FUNCS` keys or dotted import paths.

    Args:
        script_args: the script arguments (`videorft_hf.configs.VideoRFTScriptArguments`, or any object with their
            `reward_funcs` and, for the semantic reward, `semantic_model_name_or_path` attributes). `reward_funcs`
            None or empty means `DEFAULT_REWARD_FUNCS`.

    Returns:
        The reward callables, in order.

    Raises:
        ValueError: a name is neither a registry key nor an importable `module.attribute` path.
        RewardModelError: the semantic reward's `semantic_model_name_or_path` names no model.

    Example:
        >>> from types import SimpleNamespace
        >>> [f.__name__ for f in get_reward_funcs(SimpleNamespace(reward_funcs=["format_reward", "accuracy_reward"]))]
        ['format_reward', 'accuracy_reward']
    """
    names = getattr(script_args, "reward_funcs", None) or DEFAULT_REWARD_FUNCS
    if isinstance(names, str):
        names = [names]
    return [REWARD_FUNCS[name](script_args) if name in REWARD_FUNCS else _import_reward(name) for name in names]
