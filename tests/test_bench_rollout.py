"""`benchmarks/bench_rollout.py` at a tiny size, eager paths only: it runs, and the engine samples generate's tokens."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_rollout  # noqa: E402


def test_the_rollout_benchmark_runs_and_matches_generate():
    figures = bench_rollout.main(["--repeats", "1", "--new_tokens", "8", "--prompts", "2", "--group", "2",
                                  "--no_compile"])
    assert figures["tokens_equal"]
    assert figures["rows"] == 4 and figures["generate_tokens_per_s"] > 0 and figures["engine_speedup"] > 0
    assert "compiled_speedup" not in figures
