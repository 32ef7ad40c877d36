"""`benchmarks/bench_load_310k.py` at a small size: the load benchmark runs against the loader as it is (a missing
media root is an error at load time, so the benchmark gives an empty one) and loading reads no media."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_load_310k  # noqa: E402


def test_the_load_benchmark_runs_and_loading_touches_no_media():
    figures = bench_load_310k.main(["--rows", "300"])
    assert figures["media_root_untouched"]
    assert figures["load_rows_per_s"] > 0 and figures["hub_streaming_rows_per_s"] > 0
