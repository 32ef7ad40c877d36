"""`videorft curate` throughput against an OpenAI-compatible endpoint, at several concurrency levels.

Part 1 measures the pipeline itself: a loopback server (`videorft_hf.testing.curation_backends.serve_chat_backend`) answers
every request with a valid scripted output after a fixed artificial latency, standing in for a model server whose
requests take that long each, so items per second show how well the pipeline overlaps requests (frame decoding,
base64 JPEG encoding of every sampled frame, retries bookkeeping and fsynced stage files included). Every stage goes
to the endpoint: describe (once per video), reason and revise (per question); the reference is concurrency 1, and
the ideal speed-up at concurrency c is c (requests never wait on each other). Frames follow the training preset
(16 frames at 128*28*28 pixels) from 320x240 clips.

Part 2 runs the revise stage (frames as image_url parts) against a real `transformers serve` with a tiny
Qwen2.5-VL on CPU (describe and reason scripted in process); its figures are bound by the server's generation, which
`transformers serve` runs one request at a time without `--continuous-batching`.

    HF_HUB_OFFLINE=1 python benchmarks/bench_curation.py [--videos 8] [--questions 4] [--latency 0.1] \\
        [--concurrency 1 2 4 8] [--no_transformers_serve]

`main(argv)` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from videorft_hf.curation import CurationArguments, run_curation  # noqa: E402
from videorft_hf.testing import save_tiny_vlm, write_video_questions  # noqa: E402
from videorft_hf.testing.curation_backends import (  # noqa: E402
    ScriptedChatBackend,
    serve_chat_backend,
    serve_transformers_model,
)


def _write_dataset(root: str, videos: int, questions: int) -> str:
    records = write_video_questions(root, videos, questions)
    path = os.path.join(root, "qa.jsonl")
    with open(path, "w") as stream:
        stream.writelines(json.dumps(record) + "\n" for record in records)
    return path


def _run(dataset: str, output_dir: str, backends: dict | None = None, **overrides) -> tuple[float, dict]:
    args = CurationArguments(input=[dataset], output_dir=output_dir, progress=False, **overrides)
    backends = backends or {}
    start = time.perf_counter()
    summary = run_curation(args, **backends)
    return time.perf_counter() - start, summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--questions", type=int, default=4, help="questions per video")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the loopback server takes per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--no_transformers_serve", action="store_true", help="skip part 2")
    parser.add_argument("--serve_concurrency", type=int, nargs="+", default=[1, 4])
    options = parser.parse_args(argv)

    figures: dict = {"loopback": {}, "transformers_serve": {}}
    with tempfile.TemporaryDirectory() as root:
        dataset = _write_dataset(root, options.videos, options.questions)
        items = options.videos * options.questions
        requests = options.videos + 2 * items
        print(
            f"part 1: {items} items ({options.videos} videos), {requests} requests, loopback server "
            f"latency {options.latency * 1000:.0f} ms per request, training preset frames"
        )
        print(
            f"{'concurrency':>11}{'seconds':>9}{'items/s':>9}{'requests/s':>12}{'speed-up':>10}{'max in flight':>15}"
        )
        base = None
        for concurrency in options.concurrency:
            with serve_chat_backend(ScriptedChatBackend(), latency=options.latency) as server:
                seconds, summary = _run(
                    dataset,
                    os.path.join(root, f"loopback-{concurrency}"),
                    base_url=server.base_url,
                    model="scripted",
                    concurrency=concurrency,
                )
                assert summary["kept"] == items and len(server.requests) == requests, summary
                in_flight = server.max_in_flight
            base = base or seconds
            row = {
                "seconds": round(seconds, 3),
                "items_per_second": round(items / seconds, 2),
                "requests_per_second": round(requests / seconds, 2),
                "speedup_vs_concurrency_1": round(base / seconds, 2),
                "max_in_flight": in_flight,
            }
            figures["loopback"][concurrency] = row
            print(
                f"{concurrency:>11}{seconds:>9.2f}{row['items_per_second']:>9.2f}{row['requests_per_second']:>12.2f}"
                f"{row['speedup_vs_concurrency_1']:>9.2f}x{in_flight:>15}"
            )

        if not options.no_transformers_serve:
            from transformers.utils.import_utils import is_serve_available

            if not is_serve_available():
                print("part 2 skipped: transformers serve needs pip install 'videorft_hf[serve]'")
                return figures
            model_dir = str(save_tiny_vlm("qwen2_5_vl", os.path.join(root, "tiny-qwen2.5-vl")))
            scripted = ScriptedChatBackend()
            print(f"part 2: revise of {items} items by transformers serve (tiny Qwen2.5-VL, CPU, 32 new tokens)")
            print(f"{'concurrency':>11}{'seconds':>9}{'items/s':>9}{'completion tok/s':>18}")
            with serve_transformers_model(model_dir) as base_url:
                for concurrency in options.serve_concurrency:
                    seconds, summary = _run(
                        dataset,
                        os.path.join(root, f"serve-{concurrency}"),
                        base_url=base_url,
                        model=model_dir,
                        concurrency=concurrency,
                        attempts=1,
                        revise_max_tokens=32,
                        backends={"describe_backend": scripted, "reason_backend": scripted},
                    )
                    revise = summary["stages"]["revise"]
                    assert revise["requests"] == items, summary
                    row = {
                        "seconds": round(seconds, 3),
                        "items_per_second": round(items / seconds, 2),
                        "completion_tokens_per_second": round(revise["completion_tokens"] / seconds, 1),
                    }
                    figures["transformers_serve"][concurrency] = row
                    print(
                        f"{concurrency:>11}{seconds:>9.2f}{row['items_per_second']:>9.2f}"
                        f"{row['completion_tokens_per_second']:>18.1f}"
                    )
    return figures


if __name__ == "__main__":
    main()
