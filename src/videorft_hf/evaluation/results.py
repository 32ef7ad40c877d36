"""What `videorft eval` reports: the paper's benchmarks and table, the predictions files, per-benchmark summaries and
their aggregate, `results.md`, the `model-index` of a Hub card, and the `videorft_accuracy` metric's location.

Publishing (`videorft_hf.cards`) reads results through this module alone: it imports neither the generators nor the
runner, nor (until `aggregate_results` scores records) the metric and the rewards it builds on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..jsonl import read_keyed_jsonl

# The paper's six benchmarks, in its results table's order.
PAPER_BENCHMARKS: tuple[str, ...] = ("VSI-Bench", "VideoMMMU", "MMVU", "MVBench", "TempCompass", "VideoMME")
# Hub datasets the benchmarks come from, used as `dataset.type` in model-index entries.
BENCHMARK_DATASET_IDS: dict[str, str] = {
    "VSI-Bench": "nyu-visionx/VSI-Bench",
    "VideoMMMU": "lmms-lab/VideoMMMU",
    "MMVU": "yale-nlp/MMVU",
    "MVBench": "OpenGVLab/MVBench",
    "TempCompass": "lmms-lab/TempCompass",
    "VideoMME": "lmms-lab/Video-MME",
}
# The paper's table (32 frames), for the comparison in results.md.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "Qwen2.5-VL-7B (CoT prompt)": dict(zip(PAPER_BENCHMARKS, (30.1, 48.1, 60.0, 59.0, 72.6, 56.6), strict=True)),
    "Video-R1-7B": dict(zip(PAPER_BENCHMARKS, (35.8, 52.3, 63.8, 63.9, 73.2, 59.3), strict=True)),
    "VideoRFT-7B": dict(zip(PAPER_BENCHMARKS, (36.8, 51.1, 68.5, 62.1, 73.7, 59.8), strict=True)),
}
_MODEL_INDEX_TASK = "video-text-to-text"


def read_results(path: str | os.PathLike, repair: bool = True) -> dict[str, dict]:
    """Reads a predictions JSONL file: the last record written for each sample key.

    A crash while appending can leave a last line without its newline. With `repair`, that torn tail is cut off the
    file (so the next append starts on a fresh line) and its sample counts as not done.

    Args:
        path: the `predictions/<benchmark>.jsonl` file (a missing file reads as empty).
        repair: truncate a torn last line in place.

    Returns:
        `{key: record}`.

    Raises:
        ValueError: a complete line (not the last) is not a JSON object: the file was edited or written by something
            else; the message names the line.
    """
    return read_keyed_jsonl(
        path,
        repair,
        "videorft eval record",
        "the file was not written by videorft eval or was edited. Fix or delete that line, or rerun with "
        "overwrite_output_dir.",
    )


def describe_errors(records: Sequence[Mapping[str, Any]]) -> str:
    """"N of M samples have missing media files, K failed to decode": a run's errors told apart by cause."""
    errors = [r["error"] for r in records if r.get("error") is not None]
    missing = sum(1 for e in errors if e.startswith(("VideoNotFoundError", "ImageNotFoundError")))
    parts = []
    if missing:
        parts.append(f"{missing} of {len(records)} samples have missing media files")
    if len(errors) - missing:
        parts.append(f"{len(errors) - missing} of {len(records)} samples failed to decode")
    return ", ".join(parts) or "no errors"


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def benchmark_summary(records: Sequence[Mapping[str, Any]]) -> dict:
    """One benchmark's summary from its per-sample records (see `aggregate_results` for its fields)."""
    # Deferred: the metric imports the rewards (and torch); reading and publishing results never needs it.
    from ..metrics.videorft_accuracy.videorft_accuracy import summarize_scores

    scored = [r for r in records if r.get("error") is None and r.get("score") is not None]
    summary = summarize_scores([r["score"] for r in scored], [r["problem_type"] for r in scored])
    result: dict[str, Any] = {
        "score": _percent(summary["accuracy"]),
        "num_samples": len(records),
        "num_scored": len(scored),
        "num_errors": sum(1 for r in records if r.get("error") is not None),
        "per_type": {
            problem_type: {"score": _percent(values["accuracy"]), "num_samples": values["num_samples"]}
            for problem_type, values in summary["per_type"].items()
        },
    }
    if "multiple_choice_accuracy" in summary and "mean_relative_accuracy" in summary:
        result["multiple_choice_accuracy"] = _percent(summary["multiple_choice_accuracy"])
        result["mean_relative_accuracy"] = _percent(summary["mean_relative_accuracy"])
        result["combined"] = combined_score(result["per_type"])
    return result


def combined_score(per_type: Mapping[str, Mapping[str, Any]]) -> float | None:
    """The "combined (accuracy and MRA)" score: the sample-weighted mean of the multiple-choice accuracy and the
    regression MRA, over those two types only, `(n_mc * accuracy + n_reg * MRA) / (n_mc + n_reg)` (VSI-Bench's column;
    for a benchmark with only these two types it is the benchmark's score). None without both types.

    Args:
        per_type: A benchmark summary's `per_type` (`{problem_type: {"score", "num_samples"}}`, percent).

    Example:
        >>> combined_score({"multiple choice": {"score": 100.0, "num_samples": 3}, "regression": {"score": 50.0,
        ...                 "num_samples": 1}, "free-form": {"score": 0.0, "num_samples": 4}})
        87.5
    """
    pair = [per_type.get("multiple choice"), per_type.get("regression")]
    if not all(part and part.get("score") is not None and part.get("num_samples") for part in pair):
        return None
    return math.fsum(part["score"] * part["num_samples"] for part in pair) / sum(part["num_samples"] for part in pair)


def score_label(summary: Mapping[str, Any]) -> str:
    """What a benchmark's `score` is, in words: the label of its model-index entry and of the card's row.

    `score` is always the mean per-sample score over the scored samples; the label names the per-sample scores it
    averages: "accuracy" when every sample is scored by exact match (multiple choice, numerical), "combined (accuracy
    and MRA)" for multiple choice and regression (VSI-Bench), else the problem types it spans.

    Example:
        >>> score_label({"per_type": {"multiple choice": {}, "regression": {}}})
        'combined (accuracy and MRA)'
        >>> score_label({"per_type": {"free-form": {}, "multiple choice": {}}})
        'mean per-sample score over all problem types (free-form, multiple choice)'
    """
    types = set(summary.get("per_type") or {})
    if types <= {"multiple choice", "numerical"}:
        return "accuracy"
    if types == {"multiple choice", "regression"}:
        return "combined (accuracy and MRA)"
    return f"mean per-sample score over all problem types ({', '.join(sorted(types))})"


def aggregate_results(records_by_benchmark: Mapping[str, Sequence[Mapping[str, Any]]], **metadata) -> dict:
    """The aggregate table: one summary per benchmark, from its per-sample records.

    Args:
        records_by_benchmark: `{benchmark: [record, ...]}` (the records `videorft eval` writes).
        **metadata: stored as they are (model, adapter, sampling and decoding settings).

    Returns:
        `{"benchmarks": {name: summary}, "num_errors": total, **metadata}`. A summary holds `score` (percent: the mean
        per-sample score over the samples without an error, as the paper reports), `num_samples`, `num_scored`,
        `num_errors` and `per_type` (`{problem_type: {"score", "num_samples"}}`); a benchmark with both
        multiple-choice and regression samples (VSI-Bench) also holds `multiple_choice_accuracy`,
        `mean_relative_accuracy` and `combined` (the mean per-sample score over those two types only, i.e. the
        sample-weighted mean of the two; `score` itself when the benchmark has no other type).

    Example:
        >>> records = [{"problem_type": "multiple choice", "score": 1.0, "error": None},
        ...            {"problem_type": "regression", "score": 0.5, "error": None}]
        >>> aggregate_results({"VSI-Bench": records})["benchmarks"]["VSI-Bench"]["combined"]
        75.0
    """
    benchmarks = {name: benchmark_summary(records) for name, records in records_by_benchmark.items()}
    return {
        **metadata,
        "scale": "percent",
        "benchmarks": benchmarks,
        "num_errors": sum(summary["num_errors"] for summary in benchmarks.values()),
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_results_markdown(aggregate: Mapping[str, Any]) -> str:
    """`results.md`: the per-benchmark table, per problem type, VSI-Bench's parts, and the paper's rows for reference.

    Args:
        aggregate: what `aggregate_results` returns.

    Returns:
        Markdown text.
    """
    benchmarks: Mapping[str, Mapping[str, Any]] = aggregate["benchmarks"]
    model = aggregate.get("model_name_or_path") or "model"
    if aggregate.get("adapter_path"):
        model += f" + {aggregate['adapter_path']}"
    lines = [f"# videorft eval: {model}", ""]
    lines += ["| benchmark | score | samples | scored | errors |", "|---|---:|---:|---:|---:|"]
    for name, summary in benchmarks.items():
        lines.append(
            f"| {name} | {_fmt(summary['score'])} | {summary['num_samples']} | {summary['num_scored']} "
            f"| {summary['num_errors']} |"
        )
    lines += [
        "",
        "Scores are percentages: the mean per-sample score over the samples scored (samples whose media "
        "is missing or fails to decode are counted under errors and left out).",
        "",
    ]
    lines += ["## Per problem type", "", "| benchmark | problem type | score | samples |", "|---|---|---:|---:|"]
    for name, summary in benchmarks.items():
        for problem_type, values in summary["per_type"].items():
            lines.append(f"| {name} | {problem_type} | {_fmt(values['score'])} | {values['num_samples']} |")
    combined = {name: s for name, s in benchmarks.items() if "combined" in s}
    if combined:
        lines += ["", "## Multiple choice and regression (VSI-Bench style)", ""]
        lines += ["| benchmark | multiple-choice accuracy | MRA | combined |", "|---|---:|---:|---:|"]
        for name, s in combined.items():
            lines.append(
                f"| {name} | {_fmt(s['multiple_choice_accuracy'])} | {_fmt(s['mean_relative_accuracy'])} "
                f"| {_fmt(s['combined'])} |"
            )
        lines += [
            "",
            "MRA (mean relative accuracy) of a regression answer = the share of thresholds t in {0.50, 0.55, ..., "
            "0.95} with |pred - gt| / |gt| < 1 - t. The combined score is the mean per-sample score over the "
            "multiple-choice and regression samples only (exact match for multiple choice, MRA for regression), i.e. "
            "the sample-weighted mean (n_mc * accuracy + n_reg * MRA) / (n_mc + n_reg). For a benchmark with only "
            "these two problem types (VSI-Bench) it is the benchmark's score, as the paper's VSI-Bench column; with "
            "other types too, the score in the first table averages over every sample, the combined score does not.",
        ]
    columns = list(PAPER_BENCHMARKS) + [name for name in benchmarks if name not in PAPER_BENCHMARKS]
    lines += ["", "## Against the paper (32 frames)", ""]
    lines += ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    lines.append(
        "| **this run** | "
        + " | ".join(_fmt(benchmarks[c]["score"]) if c in benchmarks else "" for c in columns)
        + " |"
    )
    for paper_model, scores in PAPER_RESULTS.items():
        lines.append(
            f"| {paper_model} | " + " | ".join(_fmt(scores.get(c)) if c in scores else "" for c in columns) + " |"
        )
    return "\n".join(lines) + "\n"


def results_to_model_index(
    aggregate: Mapping[str, Any], model_name: str, task_type: str = _MODEL_INDEX_TASK
) -> list[dict]:
    """The aggregate results as the `model-index` of a Hub model card (the format `huggingface_hub` reads).

    One result per benchmark: its `dataset` (`name` the benchmark, `type` its Hub dataset id when it is one of the
    paper's six, else its name) and its metrics in percent: first its score (the paper's number), named by
    `score_label` after what it averages; a benchmark with multiple-choice and regression samples adds the
    multiple-choice accuracy and `mean_relative_accuracy` (and, when it has other problem types too, the combined
    score of those two). Benchmarks without a score are left out.

    Args:
        aggregate: what `aggregate_results` / `run_evaluation` return.
        model_name: the model's name in the card.
        task_type: the task id (default "video-text-to-text").

    Returns:
        `[{"name": model_name, "results": [{"task": ..., "dataset": ..., "metrics": [...]}, ...]}]`: put it under
        `model-index:` in the card's YAML, or turn it into `huggingface_hub.EvalResult`s with
        `huggingface_hub.repocard_data.model_index_to_eval_results`.

    Example:
        >>> aggregate = {"benchmarks": {"MVBench": {"score": 62.1, "per_type": {}}}}
        >>> results_to_model_index(aggregate, "my-model")[0]["results"][0]["metrics"]
        [{'type': 'accuracy', 'value': 62.1, 'name': 'accuracy'}]
    """
    results = []
    for name, summary in aggregate["benchmarks"].items():
        if summary.get("score") is None:
            continue
        label = score_label(summary)
        metrics = [{"type": "accuracy", "value": round(summary["score"], 2), "name": label}]
        per_type = summary.get("per_type") or {}
        combined = combined_score(per_type)  # from the per-type scores, so results.json of any version reads alike
        if combined is not None:
            if label != "combined (accuracy and MRA)":  # other problem types too: the pair's own mean
                metrics.append({"type": "accuracy", "value": round(combined, 2), "name": "combined (accuracy and MRA)"})
            metrics += [
                {
                    "type": "accuracy",
                    "value": round(per_type["multiple choice"]["score"], 2),
                    "name": "multiple-choice accuracy",
                },
                {"type": "mean_relative_accuracy", "value": round(per_type["regression"]["score"], 2), "name": "MRA"},
            ]
        results.append(
            {
                "task": {"type": task_type, "name": "Video Question Answering"},
                "dataset": {"name": name, "type": BENCHMARK_DATASET_IDS.get(name, name)},
                "metrics": metrics,
            }
        )
    return [{"name": model_name, "results": results}]


def metric_path() -> str:
    """Folder of the `videorft_accuracy` metric module; `evaluate.load(metric_path())` loads it offline."""
    return str(Path(__file__).resolve().parents[1] / "metrics" / "videorft_accuracy")


def load_metric(**kwargs):
    """`evaluate.load(metric_path(), **kwargs)`: the `videorft_accuracy` metric as an `evaluate.Metric`.

    Example:
        >>> metric = load_metric()  # doctest: +SKIP
        >>> metric.compute(predictions=["<answer>B</answer>"], references=["<answer>B</answer>"],
        ...                problem_types=["multiple choice"])["accuracy"]  # doctest: +SKIP
        1.0
    """
    import evaluate

    return evaluate.load(metric_path(), **kwargs)
