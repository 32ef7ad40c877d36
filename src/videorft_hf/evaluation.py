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
did not apply them in the release's evaluation). `temperature=0` decodes greedily.

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

import dataclasses
import json
import logging
import math
import os
import re
import shutil
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .configs import VideoSamplingArguments, sampling_flags
from .data import DataFileNotFoundError, MediaRootError, check_media_root, looks_like_local_path
from .internals import apply_position_rule
from .jsonl import append_jsonl, output_dir_lock, read_keyed_jsonl, write_json
from .metrics.videorft_accuracy.videorft_accuracy import reference_answer, score_output, summarize_scores
from .modeling import load_model, merge_adapter
from .processing import (
    RowMedia,
    check_vision_tokens,
    collate_vision,
    encode_prompt,
    load_row_media,
    mm_token_type_ids,
    render_prompt,
)
from .run_record import RUN_RECORD_NAME, read_run_record
from .video import FrameCache, MediaDecodeError, VideoSamplingConfig

logger = logging.getLogger(__name__)

__all__ = [
    "BENCHMARK_DATASET_IDS",
    "PAPER_BENCHMARKS",
    "PAPER_RESULTS",
    "BenchmarkSpec",
    "EvalArguments",
    "EvalSample",
    "TransformersGenerator",
    "VLLMGenerator",
    "aggregate_results",
    "build_vllm_request",
    "combined_score",
    "format_results_markdown",
    "load_metric",
    "metric_path",
    "parse_benchmark_spec",
    "read_results",
    "results_to_model_index",
    "run_evaluation",
    "score_label",
]

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
# File stems and spellings that name a paper benchmark (lower case, letters and digits only, "eval" prefix dropped):
# Video-R1-eval's `eval_vsibench.json` is VSI-Bench.
_BENCHMARK_ALIASES: dict[str, str] = {re.sub(r"[^a-z0-9]", "", name.lower()): name for name in PAPER_BENCHMARKS}
_MODEL_INDEX_TASK = "video-text-to-text"
_RUN_CONFIG = "run_config.json"


# --------------------------------------------------------------------------------------------- arguments
@dataclass
class EvalArguments(VideoSamplingArguments):
    """Arguments of `videorft eval` (also usable from Python with `run_evaluation`).

    The video sampling fields come from `VideoSamplingArguments`, the same fields the SFT and GRPO configs have, with
    the evaluation preset as default. `on_bad_sample` defaults to "skip": a sample whose media cannot be decoded is
    recorded with its error and counted, and the run goes on.
    """

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Checkpoint folder or Hub model id (the base model when adapter_path is set)."}
    )
    adapter_path: str | None = field(
        default=None, metadata={"help": "A peft LoRA adapter to apply to the model (merged into it before eval)."}
    )
    benchmarks: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Benchmark files: 'path' (name from the file stem; Video-R1-eval's eval_vsibench.json becomes "
            "VSI-Bench), 'name=path', or 'name=repo_id[:data_file]' for a Hub dataset."
        },
    )
    media_root: str | None = field(
        default=None, metadata={"help": "Folder the records' './' media paths are relative to."}
    )
    output_dir: str = field(default="eval_results", metadata={"help": "Where predictions and results are written."})
    batch_size: int = field(default=8, metadata={"help": "Samples per generation call."})
    backend: str = field(default="transformers", metadata={"help": "'transformers' (generate) or 'vllm'."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Most tokens generated per sample (paper: 1024)."})
    temperature: float = field(default=0.1, metadata={"help": "Sampling temperature (paper: 0.1); 0 is greedy."})
    top_p: float = field(default=0.001, metadata={"help": "Nucleus sampling mass (paper: 0.001)."})
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "System prompt; use the value the model was trained with (default: none, as the release)."},
    )
    max_samples: int | None = field(
        default=None, metadata={"help": "Evaluate only the first N samples of each benchmark (for smoke tests)."}
    )
    seed: int = field(default=42, metadata={"help": "Random seed of sampling (set before every batch)."})
    dtype: str = field(
        default="auto", metadata={"help": "Model dtype: 'auto' (bfloat16 on GPU, float32 on CPU) or a torch dtype."}
    )
    device: str | None = field(default=None, metadata={"help": "Device for transformers (default: cuda if any)."})
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention implementation for transformers (e.g. 'flash_attention_2')."}
    )
    decode_workers: int = field(
        default=2, metadata={"help": "Threads decoding the next batches' media while the model generates (0: none)."}
    )
    retry_errors: bool = field(
        default=False, metadata={"help": "On resume, retry samples that were recorded with a media error."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Discard earlier predictions in output_dir instead of resuming."}
    )
    dataset_split: str = field(default="test", metadata={"help": "Split to load for Hub benchmarks."})
    cache_dir: str | None = field(default=None, metadata={"help": "`datasets` cache folder."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar per benchmark."})
    vllm_gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vLLM: share of GPU memory to use."})
    vllm_tensor_parallel_size: int = field(default=1, metadata={"help": "vLLM: tensor parallel size."})
    vllm_max_model_len: int | None = field(default=None, metadata={"help": "vLLM: context length (default: model's)."})
    # Overridden defaults of VideoSamplingArguments.
    video_sampling_preset: str = field(
        default="videorft-eval",
        metadata={
            "help": "Sampling preset: 'videorft-eval' (32 frames at 256*28*28, the paper), 'videorft-train', ..."
        },
    )
    frame_cache_bytes: int = field(
        default=2 * 1024**3,
        metadata={"help": "Reuse decoded frames up to this many bytes (VSI-Bench asks many questions per video)."},
    )
    on_bad_sample: str = field(
        default="skip",
        metadata={
            "help": "A sample whose media cannot be decoded: 'skip' (recorded as an error, counted) or 'raise'."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.backend not in ("transformers", "vllm"):
            raise ValueError(f"backend must be 'transformers' or 'vllm', got {self.backend!r}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be >= 0 (0 decodes greedily), got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {self.max_samples}.")
        if self.decode_workers < 0:
            raise ValueError(f"decode_workers must be >= 0, got {self.decode_workers}.")
        if isinstance(self.benchmarks, str):
            self.benchmarks = [self.benchmarks]
        for spec in self.benchmarks:
            parse_benchmark_spec(spec)  # fails now, not after the model has loaded


# --------------------------------------------------------------------------------------------- benchmarks
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


def _load_rows(spec: BenchmarkSpec, args: EvalArguments) -> list[dict]:
    from .data import load_videorft_dataset

    kwargs: dict[str, Any] = {}
    if spec.data_file is not None:
        kwargs["data_files"] = {args.dataset_split: spec.data_file}
    dataset = load_videorft_dataset(
        spec.source,
        split=args.dataset_split,
        media_root=args.media_root,
        system_prompt=args.system_prompt,
        include_target=False,
        cache_dir=args.cache_dir,
        **kwargs,
    )
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    return dataset.to_list()


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


def _check_media_present(name: str, rows: Sequence[Mapping[str, Any]], media_root: str | None) -> None:
    """Raises `MediaRootError` when not one media file of a benchmark exists (a wrong or missing `--media_root`);
    some missing files are left to the run, which records each one as missing."""
    paths = [row.get("video") or row.get("image") for row in rows]
    paths = [path for path in paths if path]
    if paths and not any(os.path.isfile(path) for path in paths):
        root = media_root if media_root is not None else f"the current folder ({os.getcwd()}), as --media_root is not set"
        raise MediaRootError(
            f"{name}: none of its {len(paths)} media files exist (the first: {paths[0]}); the records' './' paths are "
            f"relative to {root}. Pass --media_root with the folder the benchmark's media was extracted into."
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


def _sample_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """`str(problem_id)`, with `#2`, `#3`, ... for repeats, so that every sample of a benchmark has its own key."""
    seen: dict[Any, int] = {}
    keys = []
    for row in rows:
        count = seen[row["problem_id"]] = seen.get(row["problem_id"], 0) + 1
        keys.append(str(row["problem_id"]) if count == 1 else f"{row['problem_id']}#{count}")
    return keys


# --------------------------------------------------------------------------------------------- results file
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


def _write_text(path: str | os.PathLike, text: str) -> None:
    tmp = os.fspath(path) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------- samples
@dataclass
class EvalSample:
    """One sample on its way through the run: its row, then its rendered prompt and decoded media, then the
    backend's inputs (`inputs`), or the decode `error` that replaces all of them."""

    benchmark: str
    key: str
    index: int
    row: dict
    text: str | None = None
    media: RowMedia | None = None
    inputs: Any = None
    error: str | None = None


def _result_record(sample: EvalSample, output: str | None) -> dict:
    row = sample.row
    record = {
        "benchmark": sample.benchmark,
        "key": sample.key,
        "index": sample.index,
        "problem_id": row["problem_id"],
        "problem_type": row["problem_type"],
        "data_type": row["data_type"],
        "data_source": row.get("data_source"),
        "problem": row["problem"],
        "options": row.get("options") or [],
        "solution": row["solution"],
        "ground_truth": reference_answer(row["solution"]),
        "output": output,
        "prediction": None,
        "score": None,
        "error": sample.error,
    }
    if output is not None:
        record["prediction"], record["score"] = score_output(output, row["solution"], row["problem_type"])
    return record


def _is_done(record: dict | None, row: Mapping[str, Any], retry_errors: bool) -> bool:
    if record is None:
        return False
    # A record of another version of the file (same key, different question) is stale and is redone.
    if record.get("solution") != row["solution"] or record.get("problem_type") != row["problem_type"]:
        return False
    return not (retry_errors and record.get("error") is not None)


def _prepared_batches(
    samples: Sequence[EvalSample], prepare: Callable[[EvalSample], EvalSample], batch_size: int, workers: int
) -> Iterator[list[EvalSample]]:
    """Batches of prepared samples, in order; with `workers`, the next two batches are prepared in threads while the
    caller generates."""
    batches = [list(samples[i : i + batch_size]) for i in range(0, len(samples), batch_size)]
    if workers <= 0:
        for batch in batches:
            yield [prepare(sample) for sample in batch]
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="videorft-eval-decode")
    try:
        pending = deque()
        upcoming = iter(batches)
        for batch in upcoming:
            pending.append([pool.submit(prepare, sample) for sample in batch])
            if len(pending) == 2:
                break
        while pending:
            futures = pending.popleft()
            batch = next(upcoming, None)
            if batch is not None:
                pending.append([pool.submit(prepare, sample) for sample in batch])
            yield [future.result() for future in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------- backends
class TransformersGenerator:
    """Batched generation with `model.generate` (CPU or GPU), inputs built by `videorft_hf.processing`.

    Prompts of a batch are left-padded; every sample's vision tensors are those the trainer would build for it. Image
    and video placeholder tokens are suppressed (a sampled placeholder would have no features), as in the trainer.
    The model gets Qwen's M-RoPE position rule (`videorft_hf.internals.apply_position_rule`), as in training.

    Args:
        model: a Qwen2-VL / Qwen2.5-VL / Qwen3-VL model.
        processor: its processor.
        max_new_tokens, temperature, top_p: decoding (temperature 0: greedy).
        seed: `torch.manual_seed(seed)` before every batch, so a batch's samples do not depend on earlier batches
            (a resumed run draws what an uninterrupted one draws).

    Example:
        >>> generator = TransformersGenerator(model, processor, max_new_tokens=1024, temperature=0.1, top_p=0.001)  # doctest: +SKIP
    """

    def __init__(self, model, processor, *, max_new_tokens=1024, temperature=0.1, top_p=0.001, seed=42):
        from transformers import GenerationConfig

        self.model = apply_position_rule(model)
        self.processor = processor
        self.model_config = model.config
        self.seed = seed
        tokenizer = getattr(processor, "tokenizer", processor)
        model_generation = getattr(model, "generation_config", None)
        eos = getattr(model_generation, "eos_token_id", None) or tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = eos[0] if isinstance(eos, list) else eos
        self.pad_token_id = pad
        self.image_token_id = getattr(self.model_config, "image_token_id", None)
        self.video_token_id = getattr(self.model_config, "video_token_id", None)
        sampling = temperature > 0
        # Every sampling field set explicitly: None fields would be filled from the checkpoint's generation_config.json
        # (Qwen ships top_k=1 and repetition_penalty=1.05), which the paper's vLLM evaluation did not apply.
        self.generation_config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else 1.0,
            top_p=top_p if sampling else 1.0,
            top_k=0 if sampling else None,  # greedy: unused, and transformers warns about any value it is given
            repetition_penalty=1.0,
            num_beams=1,
            eos_token_id=eos,
            pad_token_id=pad,
            bos_token_id=getattr(model_generation, "bos_token_id", None),
            suppress_tokens=[t for t in (self.image_token_id, self.video_token_id) if t is not None] or None,
        )

    def prepare(self, sample: EvalSample) -> None:
        """Encodes a sample with the processor (sets `sample.inputs = (input_ids, vision tensors)`)."""
        media = sample.media or RowMedia()
        ids, vision = encode_prompt(self.processor, sample.text, media.videos, media.images)
        where = f"{sample.benchmark} sample {sample.key} (problem_id {sample.row['problem_id']})"
        check_vision_tokens(self.processor, ids, vision, self.model_config, where=where)
        sample.inputs = (ids, vision)

    def generate(self, samples: Sequence[EvalSample]) -> list[str]:
        """Generates one output per prepared sample, in order."""
        import torch

        device = next(self.model.parameters()).device
        encoded = [sample.inputs for sample in samples]
        length = max(len(ids) for ids, _ in encoded)
        input_ids = torch.tensor([[self.pad_token_id] * (length - len(ids)) + ids for ids, _ in encoded])
        attention_mask = torch.tensor([[0] * (length - len(ids)) + [1] * len(ids) for ids, _ in encoded])
        inputs = {key: value.to(device) for key, value in collate_vision([vision for _, vision in encoded]).items()}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.model.dtype)
        if inputs:
            inputs["mm_token_type_ids"] = mm_token_type_ids(input_ids, self.image_token_id, self.video_token_id).to(
                device
            )
        torch.manual_seed(self.seed)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=self.generation_config,
                **inputs,
            )
        return self.processor.batch_decode(output[:, length:], skip_special_tokens=True)


def build_vllm_request(sample: EvalSample, model_type: str | None = None) -> dict:
    """The vLLM prompt for a prepared sample: its rendered text and its already-sampled frames with their metadata.

    Videos go as `(frames, metadata)` pairs, frames uint8 `(T, H, W, 3)` and metadata the `VideoMetadata` fields as a
    dict, with `do_sample_frames=False` so that vLLM's processor neither resamples nor resizes what
    `videorft_hf.video` sampled (the format qwen-vl-utils produces with `return_video_metadata=True`). For Qwen2-VL
    and Qwen2.5-VL the sampled fps also goes in `mm_processor_kwargs["fps"]`: vLLM versions that drop the metadata
    for these families compute `second_per_grid_ts` from it (transformers >= 5 takes it from the metadata and
    ignores `fps`).

    Args:
        sample: a sample with `text` and `media` set.
        model_type: the model's `config.model_type`.

    Returns:
        `{"prompt": text, "multi_modal_data": {...}, "mm_processor_kwargs": {...}}` (no media keys for a text row).

    Example:
        >>> request = build_vllm_request(sample, "qwen2_5_vl")  # doctest: +SKIP
        >>> frames, metadata = request["multi_modal_data"]["video"][0]  # doctest: +SKIP
    """
    import dataclasses

    request: dict[str, Any] = {"prompt": sample.text}
    media = sample.media or RowMedia()
    multi_modal_data: dict[str, Any] = {}
    if media.videos:
        videos = []
        for frames, metadata in media.videos:
            fields = {f.name: getattr(metadata, f.name) for f in dataclasses.fields(metadata)}
            fields = {name: value for name, value in fields.items() if value is not None}
            fields["frames_indices"] = list(fields.get("frames_indices", []))
            fields["do_sample_frames"] = False
            videos.append((frames, fields))
        multi_modal_data["video"] = videos
        kwargs: dict[str, Any] = {"do_sample_frames": False}
        if model_type in ("qwen2_vl", "qwen2_5_vl") and len(media.videos) == 1:
            kwargs["fps"] = float(media.videos[0][1].sampled_fps)
        request["mm_processor_kwargs"] = kwargs
    if media.images:
        multi_modal_data["image"] = list(media.images) if len(media.images) > 1 else media.images[0]
    if multi_modal_data:
        request["multi_modal_data"] = multi_modal_data
    return request


def _require_vllm():
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            "The vLLM backend needs vLLM: pip install 'videorft_hf[vllm]' (on a machine with a CUDA GPU), or use "
            "backend='transformers'."
        ) from error
    return vllm


class VLLMGenerator:
    """Generation with vLLM (`pip install 'videorft_hf[vllm]'`, on a CUDA GPU; vLLM's CPU build runs it too).

    Prompts are rendered and media decoded exactly as for the transformers backend; requests are built by
    `build_vllm_request` (the rendered text, whose image and video placeholders vLLM expands). `make test-vllm` runs
    `videorft eval --backend vllm` on vLLM's CPU build and compares its answers with the transformers backend's.

    Args:
        model_name_or_path: the checkpoint vLLM loads (merge an adapter first, see `videorft_hf.modeling.merge_adapter`).
        processor: its processor (prompt rendering).
        model_config: its config.
        max_new_tokens, temperature, top_p, seed: decoding.
        gpu_memory_utilization, tensor_parallel_size, max_model_len: engine settings.
        llm: an already built `vllm.LLM` (then the engine settings are unused).

    Raises:
        ImportError: vLLM is not installed (with the command that installs it).
    """

    def __init__(
        self,
        model_name_or_path: str,
        processor,
        model_config,
        *,
        max_new_tokens: int = 1024,
        temperature: float = 0.1,
        top_p: float = 0.001,
        seed: int = 42,
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        llm=None,
    ):
        vllm = _require_vllm()
        self.processor = processor
        self.model_config = model_config
        self.model_type = getattr(model_config, "model_type", None)
        if llm is None:
            engine: dict[str, Any] = {
                "model": model_name_or_path,
                "gpu_memory_utilization": gpu_memory_utilization,
                "tensor_parallel_size": tensor_parallel_size,
                "seed": seed,
                "limit_mm_per_prompt": {"video": 1, "image": 1},
            }
            if max_model_len is not None:
                engine["max_model_len"] = max_model_len
            llm = vllm.LLM(**engine)
        self.llm = llm
        sampling = temperature > 0
        self.sampling_params = vllm.SamplingParams(
            max_tokens=max_new_tokens,
            temperature=temperature if sampling else 0.0,
            top_p=top_p if sampling else 1.0,
            seed=seed,
        )

    def prepare(self, sample: EvalSample) -> None:
        sample.inputs = build_vllm_request(sample, self.model_type)

    def generate(self, samples: Sequence[EvalSample]) -> list[str]:
        outputs = self.llm.generate([sample.inputs for sample in samples], self.sampling_params, use_tqdm=False)
        return [output.outputs[0].text for output in outputs]


# --------------------------------------------------------------------------------------------- aggregation
def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _benchmark_summary(records: Sequence[Mapping[str, Any]]) -> dict:
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
    benchmarks = {name: _benchmark_summary(records) for name, records in records_by_benchmark.items()}
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
    return str(Path(__file__).resolve().parent / "metrics" / "videorft_accuracy")


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


# --------------------------------------------------------------------------------------------- the run
def _run_config(args: EvalArguments, sampling: VideoSamplingConfig) -> dict:
    return {
        "model_name_or_path": args.model_name_or_path,
        "adapter_path": args.adapter_path,
        "sampling": sampling.to_dict(),
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "system_prompt": args.system_prompt,
        "seed": args.seed,
    }


def _check_run_config(output_dir: str, config: dict, overwrite: bool) -> None:
    path = os.path.join(output_dir, _RUN_CONFIG)
    if overwrite:
        shutil.rmtree(os.path.join(output_dir, "predictions"), ignore_errors=True)
    elif os.path.exists(path):
        with open(path, encoding="utf-8") as stream:
            previous = json.load(stream)
        changed = [name for name in config if previous.get(name) != config[name]]
        if changed:
            details = "; ".join(f"{name}: {previous.get(name)!r} -> {config[name]!r}" for name in changed)
            raise ValueError(
                f"{output_dir} holds predictions made with other settings ({details}). Use another output_dir, or "
                "pass overwrite_output_dir to discard them."
            )
    os.makedirs(os.path.join(output_dir, "predictions"), exist_ok=True)
    write_json(path, config)


def _build_generator(args: EvalArguments, processor, model_config):
    if args.backend == "vllm":
        _require_vllm()  # before any merge work
        model_path = args.model_name_or_path
        if args.adapter_path is not None:
            merged = os.path.join(args.output_dir, "merged_model")
            model_path = merge_adapter(model_path, args.adapter_path, merged, dtype="bfloat16")
        return VLLMGenerator(
            model_path,
            processor,
            model_config,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
            gpu_memory_utilization=args.vllm_gpu_memory_utilization,
            tensor_parallel_size=args.vllm_tensor_parallel_size,
            max_model_len=args.vllm_max_model_len,
        )
    model = load_model(args.model_name_or_path, args.adapter_path, args.dtype, args.device, args.attn_implementation)
    return TransformersGenerator(
        model,
        processor,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )


def _show_progress(bar, scores: Sequence[float], errors: int) -> None:
    accuracy = 100 * math.fsum(scores) / len(scores) if scores else float("nan")
    bar.set_postfix(acc=f"{accuracy:.1f}", errors=errors, refresh=False)


def run_evaluation(args: EvalArguments, generator=None) -> dict:
    """Evaluates a model on `args.benchmarks`, resuming from what `args.output_dir` already holds.

    Args:
        args: the run's `EvalArguments`.
        generator: an already built backend (`TransformersGenerator`, `VLLMGenerator`, or any object with
            `processor`, `model_config`, `prepare(sample)` and `generate(samples) -> list[str]`); built from `args`
            when None.

    Returns:
        The aggregate (see `aggregate_results`), also written to `results.json` and `results.md`.

    Raises:
        ValueError: no benchmarks, or `output_dir` holds predictions made with other settings.
        DataFileNotFoundError: a benchmark path that looks local is found neither as given nor under `media_root`.
        MediaRootError: `media_root` is not a folder, or a benchmark's media files are all missing (both before the
            model loads).
        MediaDecodeError: a media file fails to decode and `on_bad_sample="raise"`.
        RuntimeError: another run holds `output_dir`, or the process was launched with WORLD_SIZE > 1.
    """
    if not args.benchmarks:
        raise ValueError("No benchmarks: pass --benchmarks with one or more files (or name=path).")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError(
            "videorft eval runs in one process (launched with WORLD_SIZE > 1 here). For several GPUs use "
            "--backend vllm --vllm_tensor_parallel_size N, or run one process per GPU on different benchmarks with "
            "different output_dir values."
        )
    specs = [parse_benchmark_spec(spec) for spec in args.benchmarks]
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"Benchmark names repeat: {names}; name them explicitly with name=path.")
    # Everything that can be checked without the model is checked first: paths, the media root, rows and media files.
    check_media_root(args.media_root)
    specs = [resolve_benchmark_spec(spec, args.media_root) for spec in specs]
    rows_by_benchmark = {spec.name: _load_rows(spec, args) for spec in specs}
    for spec in specs:
        _check_media_present(spec.name, rows_by_benchmark[spec.name], args.media_root)
    if generator is None:
        if args.model_name_or_path is None:
            raise ValueError("Pass model_name_or_path (the base model when adapter_path is set).")
        from transformers import AutoConfig, AutoProcessor

        processor = AutoProcessor.from_pretrained(args.model_name_or_path)
        model_config = AutoConfig.from_pretrained(args.model_name_or_path)
    else:
        processor, model_config = generator.processor, generator.model_config
    from .settings import RunSettings

    sampling = RunSettings.resolve(args, model_config, processor).sampling  # the config's, with the model's patch size
    training = compare_with_training_sampling(args)
    output_dir = args.output_dir
    os.makedirs(output_dir, exist_ok=True)
    with output_dir_lock(output_dir, "videorft eval"):  # two runs appending to one results file would corrupt it
        return _run(args, specs, rows_by_benchmark, generator, processor, model_config, sampling, training)


def _training_sampling(args: EvalArguments) -> tuple[str | None, VideoSamplingConfig, str] | None:
    """The sampling the evaluated model was trained with: `(preset, config, run record path)` from the run record
    saved with it (the adapter's when evaluating an adapter), or None when it has none."""
    folder = args.adapter_path or args.model_name_or_path
    if not folder or not os.path.isdir(folder):
        return None
    record = read_run_record(folder)
    if not record or not isinstance(record.get("sampling"), Mapping):
        return None
    recorded = dict(record["sampling"])
    preset = recorded.pop("preset", None)
    names = {f.name for f in dataclasses.fields(VideoSamplingConfig)}
    try:
        config = VideoSamplingConfig(**{key: value for key, value in recorded.items() if key in names})
    except (TypeError, ValueError):
        return None
    return preset, config, os.path.join(folder, RUN_RECORD_NAME)


def compare_with_training_sampling(args: EvalArguments) -> dict | None:
    """Compares the evaluation's video sampling with the one the model was trained with, and warns when they differ.

    The warning names both samplings and the flags that evaluate as trained. (The paper trains at 16 frames and
    evaluates at 32, the `videorft-eval` preset; a model trained at 4 frames, such as the demo's, scores far lower at
    32.)

    Args:
        args: The run's arguments (`model_name_or_path`, `adapter_path` and the sampling fields).

    Returns:
        None when the model folder has no run record with a sampling, else `{"preset", "sampling", "matches",
        "flags"}`: the training preset and sampling (as `VideoSamplingConfig.to_dict()`), whether the evaluation
        samples the same way (`patch_factor` aside, which follows the model) and the flags that select it (None
        when no flags can).
    """
    found = _training_sampling(args)
    if found is None:
        return None
    preset, trained, record_path = found
    evaluation = args.sampling_config()
    differences = evaluation.differences(trained)
    flags = sampling_flags(trained, preset)
    if differences:
        details = ", ".join(f"{name} {ours} here, {theirs} in training" for name, (ours, theirs) in differences.items())
        advice = f"To evaluate as trained, pass {' '.join(flags)}." if flags else ""
        logger.warning(
            "The video sampling of this evaluation differs from the model's training: here %s (preset %s), in "
            "training %s (preset %s, %s): %s. Scores at another sampling than the training one can differ widely. %s",
            evaluation.describe(), args.video_sampling_preset, trained.describe(), preset or "unknown", record_path,
            details, advice,
        )
    return {"preset": preset, "sampling": trained.to_dict(), "matches": not differences, "flags": flags}


def _local_path(path: str | None) -> str | None:
    """The absolute path of a local folder, or None (a Hub id, or nothing)."""
    return os.path.abspath(path) if path and os.path.exists(path) else None


def _run(
    args: EvalArguments,
    specs,
    rows_by_benchmark,
    generator,
    processor,
    model_config,
    sampling: VideoSamplingConfig,
    training: dict | None = None,
) -> dict:
    from tqdm.auto import tqdm

    output_dir = args.output_dir
    _check_run_config(output_dir, _run_config(args, sampling), args.overwrite_output_dir)
    if generator is None:
        generator = _build_generator(args, processor, model_config)
    cache = FrameCache(args.frame_cache_bytes) if args.frame_cache_bytes else None
    store = args.open_frame_store()

    def prepare(sample: EvalSample) -> EvalSample:
        sample.text = render_prompt(generator.processor, sample.row["prompt"])
        try:
            sample.media = load_row_media(sample.row, sampling, backend=args.video_backend, cache=cache, store=store)
        except MediaDecodeError as error:
            if args.on_bad_sample == "raise":
                raise
            sample.error = f"{type(error).__name__}: {error}"
        return sample

    records_by_benchmark: dict[str, list[dict]] = {}
    for spec in specs:
        rows = rows_by_benchmark[spec.name]
        keys = _sample_keys(rows)
        results_path = os.path.join(output_dir, "predictions", f"{spec.name}.jsonl")
        done = read_results(results_path)
        finished = {
            key: done[key]
            for key, row in zip(keys, rows, strict=True)
            if _is_done(done.get(key), row, args.retry_errors)
        }
        pending = [
            EvalSample(spec.name, key, index, row)
            for index, (key, row) in enumerate(zip(keys, rows, strict=True))
            if key not in finished
        ]
        scores = [r["score"] for r in finished.values() if r.get("score") is not None]
        errors = sum(1 for r in finished.values() if r.get("error") is not None)
        bar = tqdm(total=len(rows), initial=len(rows) - len(pending), desc=spec.name, disable=not args.progress)

        _show_progress(bar, scores, errors)
        with bar, open(results_path, "a", encoding="utf-8") as stream:
            for batch in _prepared_batches(pending, prepare, args.batch_size, args.decode_workers):
                ready = [sample for sample in batch if sample.error is None]
                for sample in ready:
                    generator.prepare(sample)
                outputs = dict(zip((id(s) for s in ready), generator.generate(ready), strict=True)) if ready else {}
                records = [_result_record(sample, outputs.get(id(sample))) for sample in batch]
                for sample in batch:  # frames are no longer needed; the cache keeps what it keeps
                    sample.media = sample.inputs = None
                append_jsonl(stream, records)
                for record in records:
                    finished[record["key"]] = record
                    if record["error"] is not None:
                        errors += 1
                        logger.warning("%s sample %s: %s", spec.name, record["key"], record["error"])
                    else:
                        scores.append(record["score"])
                bar.update(len(batch))
                _show_progress(bar, scores, errors)
        records = [finished[key] for key in keys]
        records_by_benchmark[spec.name] = records
        write_json(
            os.path.join(output_dir, f"{spec.name}.json"),
            {
                "benchmark": spec.name,
                "source": spec.source,
                "data_file": spec.data_file,
                "summary": _benchmark_summary(records),
                "samples": records,
            },
        )
        if errors:
            logger.warning("%s: %s (recorded as errors).", spec.name, describe_errors(records))

    aggregate = aggregate_results(
        records_by_benchmark,
        **_run_config(args, sampling),
        backend=args.backend,
        # what `videorft push --eval-results` checks: which folders were evaluated, and how they were trained
        model_abspath=_local_path(args.model_name_or_path),
        adapter_abspath=_local_path(args.adapter_path),
        training_sampling=training,
    )
    # Ready for `videorft push --eval-results results.json` (cards.eval_results_from_json reads "model-index").
    model_name = os.path.basename(os.path.normpath(args.adapter_path or args.model_name_or_path or "model"))
    aggregate["model-index"] = results_to_model_index(aggregate, model_name)
    write_json(os.path.join(output_dir, "results.json"), aggregate)
    _write_text(os.path.join(output_dir, "results.md"), format_results_markdown(aggregate))
    return aggregate
