"""`videorft eval`: a model on the paper's video benchmarks, resumable, scored by the `videorft_accuracy` metric.

Benchmarks are files in the Video-R1-eval record schema (the release schema: a JSON array or JSON lines, or a Hub
dataset), with media under `media_root`. A relative benchmark path is looked up in the current folder, then under
`media_root` (`resolve_benchmark_spec`); a local path found in neither place, a missing `media_root`, or a benchmark
none of whose media files exist stops the run before the model loads. Rows are built by `videorft_hf.data` (the package's prompts, the same code as
training), media is decoded by `videorft_hf.video` with the evaluation preset (32 frames at 256*28*28) and encoded by
`videorft_hf.processing` (the code path of `VideoGRPOTrainer`), and outputs are scored by the metric module shipped
in `videorft_hf/metrics/videorft_accuracy`, which `evaluate.load(metric_path())` also loads offline.

Decoding follows the paper: temperature 0.1, top_p 0.001, at most 1024 new tokens, with no repetition penalty and
no top-k (the checkpoint's `generation_config.json` sampling defaults are not applied, as vLLM's `SamplingParams`
did not apply them in the release's evaluation). `temperature=0` decodes greedily. The transformers backend generates
with the package's rollout engine (`generation_engine="compiled"`, the default on CUDA: a static KV cache and a
compiled decode step, built once per run) or with `model.generate` (`"transformers"`, the default elsewhere); both
from the same generation config, and `results.json` records which.

Output folder:

- `predictions/<benchmark>.jsonl`: one line per finished sample, appended and fsynced as batches finish; a re-run
  reads it and skips what is done (a line torn by a crash is dropped and its sample redone).
- `<benchmark>.json`: every sample of the benchmark with its output, extracted prediction, score or error, and the
  benchmark's summary.
- `results.json` and `results.md`: one score per benchmark (percent, as the paper: the mean per-sample score over all
  its scored samples, whatever their problem type), the score per problem type, and for a benchmark with both
  multiple-choice and regression samples the multiple-choice accuracy, the MRA and the combined score (the mean
  per-sample score over those two types only: exact match for multiple choice, MRA for regression; for VSI-Bench, which
  has only these two, it is the benchmark's score, the paper's VSI-Bench column). A sample whose media is missing or
  fails to decode is recorded with its error (`VideoNotFoundError`, `CorruptVideoError`, ...), counted under
  `num_errors` and left out of the scores. `results.json` also records the evaluated model's absolute path (for
  `videorft push --eval-results`, which checks it is the model being published).
- `run_config.json`: what the predictions depend on (model, adapter, sampling, decoding, system prompt); resuming
  with different values is refused (use a new `output_dir` or `overwrite_output_dir`).

Modules, each importing only those above it; the names below are imported from them when first used, so that
`videorft_hf.evaluation.results` (what publishing reads) loads neither the generators nor the model code:

- `results`: the paper's benchmarks and table, predictions files, summaries, `results.md`, model-index, the metric.
- `benchmarks`: `--benchmarks` entries parsed and resolved (`BenchmarkSpec`).
- `arguments`: `EvalArguments`.
- `generators`: `EvalSample`, `TransformersGenerator`, `VLLMGenerator`, `build_vllm_request`.
- `run`: `run_evaluation`, resuming, and the comparison with the training sampling.

Example:
    ```bash
    videorft eval --model_name_or_path QiWang98/VideoRFT --media_root /data/Video-R1-eval \\
        --benchmarks /data/Video-R1-eval/eval_vsibench.json /data/Video-R1-eval/eval_mvbench.json \\
        --output_dir eval/VideoRFT --batch_size 8
    ```

    ```python
    from videorft_hf.evaluation import EvalArguments, results_to_model_index, run_evaluation

    aggregate = run_evaluation(EvalArguments(model_name_or_path="out/checkpoint-1000", benchmarks=["mvbench.json"],
                                             media_root="/data/eval", output_dir="eval/ckpt1000"))
    model_index = results_to_model_index(aggregate, "my-videorft")  # the `model-index:` of a Hub model card
    ```
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# public name -> the module of this package that defines it
_EXPORTS: dict[str, str] = {
    "BENCHMARK_DATASET_IDS": "results",
    "PAPER_BENCHMARKS": "results",
    "PAPER_RESULTS": "results",
    "aggregate_results": "results",
    "benchmark_summary": "results",
    "combined_score": "results",
    "describe_errors": "results",
    "format_results_markdown": "results",
    "load_metric": "results",
    "metric_path": "results",
    "read_results": "results",
    "results_to_model_index": "results",
    "score_label": "results",
    "BenchmarkSpec": "benchmarks",
    "parse_benchmark_spec": "benchmarks",
    "resolve_benchmark_spec": "benchmarks",
    "EvalArguments": "arguments",
    "EvalSample": "generators",
    "TransformersGenerator": "generators",
    "VLLMGenerator": "generators",
    "build_vllm_request": "generators",
    "compare_with_training_sampling": "run",
    "run_evaluation": "run",
}

__all__ = [
    "BENCHMARK_DATASET_IDS",
    "BenchmarkSpec",
    "EvalArguments",
    "EvalSample",
    "PAPER_BENCHMARKS",
    "PAPER_RESULTS",
    "TransformersGenerator",
    "VLLMGenerator",
    "aggregate_results",
    "benchmark_summary",
    "build_vllm_request",
    "combined_score",
    "compare_with_training_sampling",
    "describe_errors",
    "format_results_markdown",
    "load_metric",
    "metric_path",
    "parse_benchmark_spec",
    "read_results",
    "resolve_benchmark_spec",
    "results_to_model_index",
    "run_evaluation",
    "score_label",
]

if TYPE_CHECKING:  # what the names are, for type checkers and IDEs
    from .arguments import EvalArguments
    from .benchmarks import BenchmarkSpec, parse_benchmark_spec, resolve_benchmark_spec
    from .generators import EvalSample, TransformersGenerator, VLLMGenerator, build_vllm_request
    from .results import (
        BENCHMARK_DATASET_IDS,
        PAPER_BENCHMARKS,
        PAPER_RESULTS,
        aggregate_results,
        benchmark_summary,
        combined_score,
        describe_errors,
        format_results_markdown,
        load_metric,
        metric_path,
        read_results,
        results_to_model_index,
        score_label,
    )
    from .run import compare_with_training_sampling, run_evaluation


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
