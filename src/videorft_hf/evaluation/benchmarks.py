"""Which benchmarks a run evaluates: `--benchmarks` entries parsed into `BenchmarkSpec`s (named after the paper's
spelling when a file names one of its six) and their local paths resolved, before the model loads."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass

from ..data import DataFileNotFoundError, looks_like_local_path
from .results import PAPER_BENCHMARKS

# File stems and spellings that name a paper benchmark (lower case, letters and digits only, "eval" prefix dropped):
# Video-R1-eval's `eval_vsibench.json` is VSI-Bench.
_BENCHMARK_ALIASES: dict[str, str] = {re.sub(r"[^a-z0-9]", "", name.lower()): name for name in PAPER_BENCHMARKS}


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark to evaluate: its `name` (results are keyed by it), a local `source` file or folder or a Hub
    dataset id, and for a Hub id an optional `data_file` inside the repo."""

    name: str
    source: str
    data_file: str | None = None


def _canonical_name(stem: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", stem.lower())
    key = key.removeprefix("eval") or key
    return _BENCHMARK_ALIASES.get(key, stem)


def parse_benchmark_spec(spec: str) -> BenchmarkSpec:
    """Parses a `--benchmarks` entry: `path`, `name=path` or `name=repo_id[:data_file]`.

    Without a name, the name comes from the file stem, mapped to the paper's spelling when it names one of the six
    benchmarks (`eval_vsibench.json` -> `VSI-Bench`, `videomme.jsonl` -> `VideoMME`).

    Args:
        spec: the entry.

    Returns:
        The `BenchmarkSpec`.

    Raises:
        ValueError: an empty name or source, or a name with a path separator.

    Example:
        >>> parse_benchmark_spec("/data/Video-R1-eval/eval_vsibench.json").name
        'VSI-Bench'
        >>> parse_benchmark_spec("MVBench=Video-R1/Video-R1-eval:eval_mvbench.json")
        BenchmarkSpec(name='MVBench', source='Video-R1/Video-R1-eval', data_file='eval_mvbench.json')
    """
    name, sep, source = spec.partition("=")
    if not sep or os.path.exists(spec):
        name, source = "", spec
    source = source.strip()
    if not source:
        raise ValueError(f"Benchmark {spec!r} names no file; write 'path', 'name=path' or 'name=repo_id[:file]'.")
    data_file = None
    if not os.path.exists(source) and ":" in source:
        source, data_file = source.split(":", 1)
    if not name:
        stem = os.path.basename(os.path.normpath(data_file or source))
        for suffix in (".gz", ".jsonl", ".json", ".parquet"):
            stem = stem.removesuffix(suffix)
        name = _canonical_name(stem)
    name = name.strip()
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"Benchmark name {name!r} (from {spec!r}) must be non-empty and hold no path separator.")
    return BenchmarkSpec(name=name, source=source, data_file=data_file)


def resolve_benchmark_spec(spec: BenchmarkSpec, media_root: str | None = None) -> BenchmarkSpec:
    """Resolves a benchmark's local path: as given (relative to the current folder), else relative to `media_root`.

    Video-R1-eval keeps its JSON files beside the media they point to, so a recipe can name `eval_mvbench.json` and
    work from any folder given `--media_root`. Hub dataset ids (`namespace/name`) are returned unchanged.

    Raises:
        DataFileNotFoundError: the path looks local (`data.looks_like_local_path`) and exists in neither place.

    Example:
        >>> resolve_benchmark_spec(parse_benchmark_spec("MVBench=eval_mvbench.json"), "/data/eval")  # doctest: +SKIP
        BenchmarkSpec(name='MVBench', source='/data/eval/eval_mvbench.json', data_file=None)
    """
    source = os.path.expanduser(spec.source)
    if spec.data_file is not None or os.path.exists(source):
        return spec
    if media_root is not None and not os.path.isabs(source) and os.path.exists(os.path.join(media_root, source)):
        return dataclasses.replace(spec, source=os.path.join(media_root, source))
    if looks_like_local_path(spec.source):
        tried = os.path.abspath(source)
        if media_root is not None and not os.path.isabs(source):
            tried += f" and {os.path.abspath(os.path.join(media_root, source))}"
        raise DataFileNotFoundError(
            f"{spec.source}: benchmark {spec.name!r} not found (looked for {tried}). Relative benchmark paths are "
            "looked up in the current folder, then under --media_root; the Hugging Face Hub was not searched."
        )
    return spec
