"""Public names imported on first use, so that importing a package (`import videorft_hf`, `videorft --help`) does not
import torch, transformers or trl."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict[str, Any]) -> tuple[Callable, Callable]:
    """A package's module-level `__getattr__` and `__dir__` for names defined in its submodules.

    Args:
        package: the package's `__name__`.
        exports: public name -> the submodule (relative to `package`) that defines it.
        namespace: the package's `globals()`; a name is stored there once imported, so later lookups skip `__getattr__`.

    Returns:
        `(__getattr__, __dir__)`, to assign at the package's top level.

    Example:
        >>> _EXPORTS = {"load_video_frames": "video"}
        >>> __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())  # doctest: +SKIP
    """

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
