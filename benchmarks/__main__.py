"""`make bench`: run every `benchmarks/bench_*.py` and print one table of ratios against the reference paths.

Each benchmark runs in its own process (a fresh interpreter: no decoder, cache or import state carried over, and a
failing benchmark is reported without stopping the others) with small sizes suited to a 2-core CPU machine, so that
the whole run takes about ten minutes; `--full` uses each benchmark's own defaults instead. Every benchmark's `main()`
returns a dict of figures; the table lists the ratios and speed-ups among them (keys containing "ratio" or
"speedup", nested keys joined with "."), plus a few absolute figures where a benchmark has no reference path. What
each ratio compares is in the benchmark's docstring and in BENCHMARKS.md.

    HF_HUB_OFFLINE=1 python -m benchmarks                       # all, small sizes
    HF_HUB_OFFLINE=1 python -m benchmarks --only frames rewards  # some
    HF_HUB_OFFLINE=1 python -m benchmarks --full --json bench.json
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Small sizes per benchmark: a list is passed as `main(argv)`, a dict as keyword arguments. Benchmarks not listed
# run with `main([])` (or `main()` when it takes no arguments), i.e. their defaults.
SMALL: dict[str, list[str] | dict[str, Any]] = {
    "bench_frames": ["--repeats", "2", "--store_repeats", "5"],
    "bench_prefix": ["--repeats", "2"],
    "bench_load_310k": ["--rows", "20000"],
    "bench_rewards": ["--repeats", "3"],
    "bench_trainer": {"steps": 3},
    "bench_eval": ["--videos", "3", "--questions", "4"],
    "bench_collator": ["--rows", "24", "--videos", "6", "--workers", "0", "2"],
    "bench_curation": ["--videos", "4", "--questions", "2", "--concurrency", "1", "4", "--no_transformers_serve"],
    "bench_rollout": ["--repeats", "2", "--new_tokens", "64"],
}
# Figures shown besides ratios and speed-ups, for benchmarks without a reference path.
EXTRA_FIGURES: dict[str, str] = {
    "bench_load_310k": r"^((hub_)?(load|streaming)_rows_per_s|lifetime_peak_rss_mib)$",
    "bench_frames": r"^targets_met\.",
    "bench_prefix": r"^(lm_tokens_over_needed|max_abs_logp_difference)$",
    "bench_rollout": r"^(compile_seconds|tokens_equal|\w+_tokens_per_s)$",
}
# Figures left out of the table (still in --json): per-clip detail and repeats of figures already listed.
EXCLUDED_FIGURES: dict[str, str] = {
    "bench_frames": r"per_clip|^first_decode_speedup$|^store_\w+_speedup$|^cpu_speedup_vs_fetch_video\.(?!ours_auto)",
    "bench_collator": r"num_workers\.0\.",
    "bench_curation": r"\.1\.speedup",
}
RATIO = re.compile(r"(^|_)(ratio|speedup)(_|$)")  # whole words: "generation" is no ratio


# GPU-only benchmarks, run by `make bench-gpu` rather than this runner: their figures are absolute, not ratios.
GPU_ONLY = {"bench_gpu"}


def discover() -> list[str]:
    """Names of the CPU benchmark modules, `bench_*.py` in this folder except `GPU_ONLY`, sorted."""
    return sorted(path.stem for path in HERE.glob("bench_*.py") if path.stem not in GPU_ONLY)


def flatten(figures: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`."""
    if not isinstance(figures, dict):
        return {prefix: figures}
    flat: dict[str, Any] = {}
    for key, value in figures.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def headline(name: str, figures: dict[str, Any]) -> dict[str, Any]:
    """The figures of one benchmark that go into the table."""
    extra = re.compile(EXTRA_FIGURES[name]) if name in EXTRA_FIGURES else None
    excluded = re.compile(EXCLUDED_FIGURES[name]) if name in EXCLUDED_FIGURES else None
    shown = {}
    for key, value in flatten(figures).items():
        if not isinstance(value, int | float) or (excluded and excluded.search(key)):
            continue
        last = key.rsplit(".", 1)[-1]
        if RATIO.search(last) or RATIO.search(key.split(".", 1)[0]) or (extra and extra.search(key)):
            shown[key] = value
    return shown


def run_child(name: str, full: bool, out: str) -> None:
    """In the benchmark's own process: call its `main` and write the figures as JSON to `out`."""
    module = importlib.import_module(f"benchmarks.{name}")
    parameters = inspect.signature(module.main).parameters
    arguments = None if full else SMALL.get(name)
    if isinstance(arguments, dict):
        figures = module.main(**arguments)
    elif parameters:
        figures = module.main(list(arguments or []))  # never None: argparse would read this runner's sys.argv
    else:
        figures = module.main()
    with open(out, "w", encoding="utf-8") as stream:
        json.dump(figures, stream, default=str)


def run(name: str, full: bool, timeout: float) -> dict[str, Any]:
    """Runs one benchmark in a fresh interpreter; returns `{"seconds", "figures"}` or `{"seconds", "error"}`."""
    handle, out = tempfile.mkstemp(prefix=f"{name}_", suffix=".json")
    os.close(handle)
    out = Path(out)
    command = [sys.executable, "-m", "benchmarks", "--child", name, "--out", str(out)] + (["--full"] if full else [])
    started = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
        completed = subprocess.run(command, cwd=HERE.parent, env=env, timeout=timeout, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if completed.returncode != 0 or not out.stat().st_size:
            tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
            return {"seconds": seconds, "error": " / ".join(tail) or f"exit status {completed.returncode}"}
        return {"seconds": seconds, "figures": json.loads(out.read_text())}
    except subprocess.TimeoutExpired:
        return {"seconds": time.perf_counter() - started, "error": f"timed out after {timeout:.0f} s"}
    finally:
        out.unlink(missing_ok=True)


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def table(results: dict[str, dict[str, Any]]) -> str:
    """One markdown table: benchmark, figure, value; a benchmark that failed gets one row with its error."""
    lines = ["| benchmark | figure | value |", "|---|---|---|"]
    for name, result in results.items():
        label = f"{name.removeprefix('bench_')} ({result['seconds']:.0f} s)"
        if "error" in result:
            lines.append(f"| {label} | FAILED | {result['error'].replace('|', '/')} |")
            continue
        shown = headline(name, result["figures"])
        if not shown:
            lines.append(f"| {label} | (no ratios; see its JSON) | |")
        for i, (key, value) in enumerate(shown.items()):
            lines.append(f"| {label if i == 0 else ''} | {key} | {_format(value)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="benchmark names (with or without the bench_ prefix)")
    parser.add_argument("--full", action="store_true", help="each benchmark's default sizes instead of small ones")
    parser.add_argument("--json", help="also write every benchmark's figures to this file")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed per benchmark")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child, args.full, args.out)
        return 0

    names = discover()
    if args.only:
        wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in args.only}
        unknown = wanted - set(names)
        if unknown:
            parser.error(f"unknown benchmarks {sorted(unknown)}; there are {names}")
        names = [n for n in names if n in wanted]
    started = time.perf_counter()
    results = {}
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = run(name, args.full, args.timeout)
        status = "failed" if "error" in results[name] else "done"
        print(f"  {status} in {results[name]['seconds']:.0f} s", file=sys.stderr, flush=True)
    print(table(results))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"\n{len(names)} benchmarks in {time.perf_counter() - started:.0f} s on {cpus} CPUs "
          f"({'default' if args.full else 'small'} sizes).")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(results, stream, indent=2, default=str)
    return 1 if any("error" in result for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
