"""The run of `videorft eval` (`run_evaluation`): checks before the model loads, resumable predictions files, decoding
in threads ahead of generation, and the results files (see the package docstring for the output folder)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..configs import sampling_flags
from ..data import MediaRootError, check_media_root
from ..jsonl import append_jsonl, output_dir_lock, write_json
from ..metrics.videorft_accuracy.videorft_accuracy import reference_answer, score_output
from ..modeling import load_model, merge_adapter
from ..processing import load_row_media, render_prompt
from ..run_record import RUN_RECORD_NAME, read_run_record
from ..settings import RunSettings
from ..video import FrameCache, MediaDecodeError, VideoSamplingConfig
from .arguments import EvalArguments
from .benchmarks import BenchmarkSpec, parse_benchmark_spec, resolve_benchmark_spec
from .generators import EvalSample, TransformersGenerator, VLLMGenerator, require_vllm
from .results import (
    aggregate_results,
    benchmark_summary,
    describe_errors,
    format_results_markdown,
    read_results,
    results_to_model_index,
)

logger = logging.getLogger(__name__)

_RUN_CONFIG = "run_config.json"


def _load_rows(spec: BenchmarkSpec, args: EvalArguments) -> list[dict]:
    from ..data import load_videorft_dataset

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


def _sample_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """`str(problem_id)`, with `#2`, `#3`, ... for repeats, so that every sample of a benchmark has its own key."""
    seen: dict[Any, int] = {}
    keys = []
    for row in rows:
        count = seen[row["problem_id"]] = seen.get(row["problem_id"], 0) + 1
        keys.append(str(row["problem_id"]) if count == 1 else f"{row['problem_id']}#{count}")
    return keys


def _write_text(path: str | os.PathLike, text: str) -> None:
    tmp = os.fspath(path) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.replace(tmp, path)


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
        require_vllm()  # before any merge work
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
    engine = args.resolved_generation_engine()  # an engine that cannot run fails before the model loads
    model = load_model(args.model_name_or_path, args.adapter_path, args.dtype, args.device, args.attn_implementation)
    return TransformersGenerator(
        model,
        processor,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        generation_engine=engine,
        batch_size=args.batch_size,
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
        args.resolved_generation_engine()  # refuses an engine that cannot run the requested attention
        from transformers import AutoConfig, AutoProcessor

        processor = AutoProcessor.from_pretrained(args.model_name_or_path)
        model_config = AutoConfig.from_pretrained(args.model_name_or_path)
    else:
        processor, model_config = generator.processor, generator.model_config
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
                "summary": benchmark_summary(records),
                "samples": records,
            },
        )
        if errors:
            logger.warning("%s: %s (recorded as errors).", spec.name, describe_errors(records))

    aggregate = aggregate_results(
        records_by_benchmark,
        **_run_config(args, sampling),
        backend=args.backend,
        # the transformers backend's "compiled" (rollout engine) or "transformers" (generate); None for other backends
        generation_engine=getattr(generator, "generation_engine", None),
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
