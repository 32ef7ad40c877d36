"""Records of the VideoRFT release as trl conversational rows (`make_conversation`) and dataset loading
(`load_videorft_dataset`), and the import path of the whole data API: the record schema (`videorft_hf.schema`:
fields, errors, validation, media paths, release files) and the media download (`videorft_hf.media_download`) are
re-exported here.

A record is one sample of the release (VideoRFT-CoT-102K, VideoRFT-RL-310K, or Video-R1's JSON arrays):

    {"problem_id": 7, "problem": "What colour is the car?", "data_type": "video",
     "problem_type": "multiple choice", "options": ["A. red", "B. blue"],
     "process": "<think>...</think>",  # CoT set only
     "solution": "<answer>A</answer>", "path": "./LLaVA-Video-178K/clip.mp4", "data_source": "LLaVA-Video-178K"}

`load_videorft_dataset` reads the Hub-native layout written by `dataset_scripts/` (parquet shards and a README with
`configs:`), the release's JSONL, or a JSON array; it validates every row and turns it into a row of trl's
conversational format with `make_conversation`, so prompts are built in one place (`videorft_hf.prompts`) at load
time. Media is never opened while loading: the `video` / `image` column holds a path that the collator or the
trainer decodes later.

Example:
    >>> from videorft_hf import load_videorft_dataset
    >>> dataset = load_videorft_dataset("VideoRFT-RL-310K.jsonl", media_root="/data/videorft")  # doctest: +SKIP
    >>> dataset[0]["prompt"][-1]["content"][0], dataset[0]["video"]  # doctest: +SKIP
    ({'type': 'video', 'text': None}, '/data/videorft/LLaVA-Video-178K/clip.mp4')
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from .media_download import (
    ARCHIVE_SUFFIXES,
    DEFAULT_MEDIA_PATTERNS,
    EXTRACTED_MARKER_DIR,
    extract_media_archive,
    fetch_media,
)
from .prompts import DEFAULT_SYSTEM_PROMPT, build_prompt_text
from .schema import (
    DATA_TYPES,
    RECORD_FIELDS,
    REQUIRED_FIELDS,
    MediaPathError,
    MediaRootError,
    NoValidRecordsError,
    RecordValidationError,
    check_media_root,
    iter_release_records,
    record_features,
    resolve_media_path,
    validate_record,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ARCHIVE_SUFFIXES",
    "DATA_TYPES",
    "DEFAULT_MEDIA_PATTERNS",
    "EXTRACTED_MARKER_DIR",
    "RAW_SUFFIXES",
    "RECORD_FIELDS",
    "REQUIRED_FIELDS",
    "DataFileNotFoundError",
    "MediaPathError",
    "MediaRootError",
    "NoValidRecordsError",
    "RecordValidationError",
    "check_local_path",
    "check_media_root",
    "conversation_features",
    "extract_media_archive",
    "fetch_media",
    "iter_release_records",
    "load_videorft_dataset",
    "looks_like_local_path",
    "make_conversation",
    "record_features",
    "resolve_media_path",
    "validate_record",
]

RAW_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".jsonl.gz", ".json.gz")

# Bumped whenever validation changes, so that the cached Arrow copy of a raw file is rebuilt (it is in the cache key).
_VALIDATION_VERSION = 1
_INVALID = "_invalid"  # column carrying an invalid row's error through `datasets.map`, dropped before returning
_SOURCE_BATCH_ROWS = 10_000


# --------------------------------------------------------------------------------------------- local paths
class DataFileNotFoundError(FileNotFoundError):
    """A dataset path that looks local (see `looks_like_local_path`) does not exist; the Hub is not asked."""


def looks_like_local_path(path: str) -> bool:
    """True when `path` can only mean a local file or folder, never a Hub repo id (`namespace/name`).

    That is: it starts with `./`, `../`, `/` or `~`, is absolute, holds a backslash or more than one `/`, or ends with a
    data file suffix (`.json`, `.jsonl`, `.parquet`, `.csv`, `.arrow`, with `.gz` allowed).

    Example:
        >>> looks_like_local_path("Video-R1-eval/eval_vsibench.json"), looks_like_local_path("Video-R1/Video-R1-eval")
        (True, False)
    """
    if path.startswith(("./", "../", "/", "~")) or os.path.isabs(path) or "\\" in path or path.count("/") > 1:
        return True
    return path.lower().removesuffix(".gz").endswith((".json", ".jsonl", ".parquet", ".csv", ".arrow"))


def check_local_path(path: str, what: str = "dataset") -> None:
    """Raises `DataFileNotFoundError` naming `path` when it looks local (`looks_like_local_path`) and does not exist."""
    if not os.path.exists(os.path.expanduser(path)) and looks_like_local_path(path):
        raise DataFileNotFoundError(
            f"{path}: {what} file not found (resolved to {os.path.abspath(os.path.expanduser(path))}). It is a local "
            "path, so the Hugging Face Hub was not searched; check the path (relative paths start at the current "
            "folder), or give a Hub dataset id as 'namespace/name'."
        )


# --------------------------------------------------------------------------------------------- conversations
def conversation_features(with_completion: bool) -> datasets.Features:
    """Returns the `datasets.Features` of the rows `make_conversation` produces.

    Declared rather than inferred so that video rows (`image` = None) and image rows (`video` = None) share one schema.

    Args:
        with_completion: include the `completion` column (SFT rows built from CoT records).

    Returns:
        Features in the column order of `make_conversation`'s output.
    """
    string = datasets.Value("string")
    messages = datasets.List({"role": string, "content": datasets.List({"type": string, "text": string})})
    features: dict[str, Any] = {"prompt": messages}
    if with_completion:
        features["completion"] = messages
    features.update(
        {
            "video": string,
            "image": string,
            "problem": string,
            "options": datasets.List(string),
            "solution": string,
            "problem_type": string,
            "data_type": string,
            "problem_id": datasets.Value("int64"),
            "data_source": string,
        }
    )
    return datasets.Features(features)


_STREAM_COLUMNS = {flag: list(conversation_features(flag)) for flag in (False, True)}


def make_conversation(
    record: Mapping[str, Any],
    *,
    media_root: str | os.PathLike | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    include_target: bool | None = None,
    row: int | None = None,
) -> dict[str, Any]:
    """Turns one record into a row of trl's conversational format.

    The user turn is `[{"type": "video"} or {"type": "image"}, {"type": "text", "text": build_prompt_text(...)}]`,
    preceded by a system turn when `system_prompt` is set. The media path goes in the `video` or `image` column (the
    other one is None, so video and image rows share one table schema). For CoT records the SFT target
    `process + "\\n" + solution` becomes trl's prompt-completion `completion` turn; SFTTrainer then computes the loss
    on the completion only. Every other column reaches GRPO's reward callables as keyword arguments.

    Args:
        record: a record of the release schema (validated here).
        media_root: resolve `path` inside this folder (see `resolve_media_path`); None keeps the `./` path as is.
        system_prompt: text of the system turn; None or "" sends none. Use the same value for SFT, RL and eval.
        include_target: add the `completion` turn. None adds it when the record has a `process`; True requires one;
            False never adds it (RL rows from CoT records).
        row: the record's index, for error messages.

    Returns:
        A dict with `prompt`, `completion` (when a target is included), `video`, `image`, `problem`, `options`,
        `solution`, `problem_type`, `data_type`, `problem_id` and `data_source`.

    Raises:
        RecordValidationError: the record breaks the schema (`MediaPathError` for its path).

    Example:
        >>> row = make_conversation({"problem_id": 1, "problem": "How many cars?", "data_type": "video",
        ...     "problem_type": "numerical", "process": "<think>Two cars.</think>", "solution": "<answer>2</answer>",
        ...     "path": "./clips/a.mp4", "data_source": "demo"}, media_root="/data")
        >>> row["prompt"][0]["content"][0], row["video"], row["image"]
        ({'type': 'video'}, '/data/clips/a.mp4', None)
        >>> row["completion"]
        [{'role': 'assistant', 'content': [{'type': 'text', 'text': '<think>Two cars.</think>\\n<answer>2</answer>'}]}]
    """
    record = validate_record(record, row, require_process=include_target is True)
    media_root = os.path.abspath(os.fspath(media_root)) if media_root is not None else None
    return _conversation(record, media_root, system_prompt, include_target)


def _conversation(
    record: dict[str, Any], media_root: str | None, system_prompt: str | None, include_target: bool | None
) -> dict[str, Any]:
    """`make_conversation` for a record `validate_record` already normalised; `media_root` is absolute."""
    # The path passed validate_record's lexical check (the one resolve_media_path makes), so it is joined directly.
    media = record["path"] if media_root is None else os.path.normpath(os.path.join(media_root, record["path"]))
    text = build_prompt_text(record["problem"], record["problem_type"], record["options"])
    prompt = []
    if system_prompt:
        prompt.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    prompt.append({"role": "user", "content": [{"type": record["data_type"]}, {"type": "text", "text": text}]})
    conversation: dict[str, Any] = {"prompt": prompt}
    if include_target is None:
        include_target = record["process"] is not None
    if include_target:
        target = record["process"] + "\n" + record["solution"]
        conversation["completion"] = [{"role": "assistant", "content": [{"type": "text", "text": target}]}]
    conversation.update(
        {
            "video": media if record["data_type"] == "video" else None,
            "image": media if record["data_type"] == "image" else None,
            "problem": record["problem"],
            "options": record["options"],
            "solution": record["solution"],
            "problem_type": record["problem_type"],
            "data_type": record["data_type"],
            "problem_id": record["problem_id"],
            "data_source": record["data_source"],
        }
    )
    return conversation


# --------------------------------------------------------------------------------------------- loading
def _raw_record_files(path: str) -> list[str] | None:
    """The release files to read directly when `path` is a raw file or a folder of them, else None (Hub layout)."""
    if os.path.isfile(path):
        return [path] if path.endswith(RAW_SUFFIXES) else None
    if not os.path.isdir(path):
        return None
    entries = sorted(os.listdir(path))
    if "README.md" in entries or any(entry.endswith(".parquet") for entry in entries) or "data" in entries:
        return None
    files = [os.path.join(path, entry) for entry in entries if entry.endswith(RAW_SUFFIXES)]
    return files or None


def _generate_source_rows(files: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Source rows of raw release files: normalised records, and invalid ones as placeholders carrying their error, so
    that the conversion step (not a cached one) raises or logs them on every load."""
    empty = dict.fromkeys(RECORD_FIELDS)
    for row, location, record in iter_release_records(files):
        if isinstance(record, RecordValidationError):
            error = record
        else:
            try:
                yield {**validate_record(record, row, location=location), _INVALID: None}
                continue
            except RecordValidationError as caught:
                error = caught
        yield {**empty, _INVALID: json.dumps(error.to_dict())}


def _cached_source(files: list[str], cache_dir: str | None) -> datasets.Dataset:
    """Parses and validates raw release files once into a memory-mapped Arrow file keyed by the files' paths, sizes,
    modification times and the validation version; later loads map it directly.

    Written with pyarrow in batches rather than through `Dataset.from_generator`, whose per-example encoding made
    this step 2.4 times slower on the 310K-row set.
    """
    files = [os.path.abspath(file) for file in files]
    stats = [os.stat(file) for file in files]
    key = json.dumps([files, [(st.st_size, st.st_mtime_ns) for st in stats], _VALIDATION_VERSION])
    folder = os.path.join(os.path.expanduser(cache_dir or datasets.config.HF_DATASETS_CACHE), "videorft_hf_records")
    path = os.path.join(folder, f"records-{hashlib.sha256(key.encode()).hexdigest()[:20]}.arrow")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        features = record_features(with_process=True)
        features[_INVALID] = datasets.Value("string")
        schema = features.arrow_schema  # carries the features in its metadata, so `from_file` restores them
        partial = f"{path}.{os.getpid()}.incomplete"  # per process: ranks parsing at once do not collide
        try:
            with pa.OSFile(partial, "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
                batch: list[dict[str, Any]] = []
                for row in _generate_source_rows(tuple(files)):
                    batch.append(row)
                    if len(batch) == _SOURCE_BATCH_ROWS:
                        writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                        batch = []
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
        except BaseException:
            os.remove(partial)
            raise
        os.replace(partial, path)  # atomic: an interrupted parse never leaves a truncated cache behind
    return datasets.Dataset.from_file(path)


def _convert_batch(
    batch: dict[str, list],
    indices: list[int],
    *,
    media_root: str | None,
    system_prompt: str | None,
    with_target: bool,
    on_invalid: str,
    keep_invalid: bool,
    prevalidated: bool,
    schema: pa.Schema | None,
) -> dict[str, list] | pa.Table:
    """Batched `datasets.map` function: records to conversations.

    Invalid rows raise, or (skip) are dropped with a log line (streaming) or kept as placeholders that the caller
    logs and removes (map-style: then the log does not depend on whether this step came from the cache).
    `prevalidated` rows (from `_generate_source_rows`) skip a second validation. Returns an Arrow table when `schema`
    is given, which `datasets` writes without encoding each nested prompt in Python.
    """
    columns = list(schema.names) if schema is not None else _STREAM_COLUMNS[with_target]
    out: dict[str, list] = {name: [] for name in columns}
    names = list(batch)
    for position, index in enumerate(indices):
        record = {name: batch[name][position] for name in names}
        invalid = record.pop(_INVALID, None)
        try:
            if invalid is not None:
                raise RecordValidationError.from_dict(json.loads(invalid))
            if not prevalidated:
                record = validate_record(record, index, require_process=with_target)
            elif with_target and record["process"] is None:
                raise RecordValidationError(
                    "missing; CoT records need the reasoning as '<think>...</think>'", index, "process"
                )
            row = _conversation(record, media_root, system_prompt, with_target)
        except RecordValidationError as error:
            if on_invalid == "raise":
                raise
            if not keep_invalid:
                logger.warning("Skipping invalid record: %s", error)
                continue
            row = {_INVALID: json.dumps(error.to_dict())}
        for name in columns:
            out[name].append(row.get(name))
    return out if schema is None else pa.Table.from_pydict(out, schema=schema)


def _first_rows(dataset: datasets.IterableDataset, n: int) -> list[dict[str, Any]]:
    return list(dataset.take(n))


def load_videorft_dataset(
    path_or_repo_id: str | os.PathLike,
    subset: str | None = None,
    split: str = "train",
    *,
    media_root: str | os.PathLike | None = None,
    streaming: bool = False,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    include_target: bool | None = None,
    num_proc: int | None = None,
    on_invalid: Literal["raise", "skip"] = "raise",
    cache_dir: str | None = None,
    revision: str | None = None,
    data_files: str | Sequence[str] | Mapping[str, Any] | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Loads VideoRFT / Video-R1 records as rows of trl's conversational format (see `make_conversation`).

    Reads, told apart by extension and content:
    (a) the Hub-native layout written by `dataset_scripts/` (a folder or Hub repo id with parquet shards and a README
    `configs:`), read by `datasets.load_dataset`, so `subset` picks a config;
    (b) the release's JSON lines (`.jsonl`, `.jsonl.gz`, or `.json` holding lines);
    (c) Video-R1's JSON arrays (a `.json` file holding one list);
    or a folder holding only (b) / (c) files. Raw files are parsed and validated record by record, as the builder
    does, into a memory-mapped Arrow file with declared features (cached, keyed by the files' paths, sizes and
    modification times), so a stray type cannot break schema inference and every problem is reported with its row,
    line and field.

    Only the data files are opened: `media_root` must be an existing folder, but media files are neither opened nor
    checked for existence; decoding happens in the collator or trainer. Whether rows get an SFT `completion` is decided per dataset: when `include_target` is None,
    a dataset whose `process` column has any value is the CoT set (in streaming mode: any of its first 100 rows),
    and then every row must have a `process`.

    Args:
        path_or_repo_id: a release file, a folder, or a Hub dataset repo id.
        subset: config name of a Hub-native dataset (not used for raw files).
        split: split to load.
        media_root: folder the media archives were extracted into (see `fetch_media`); `video` / `image` columns
            then hold absolute paths inside it. None keeps the records' `./` paths.
        streaming: return an `IterableDataset` that reads rows lazily.
        system_prompt: system turn for every row (None: no system turn). Use the value your eval uses.
        include_target: add the SFT `completion`; None decides from the data (see above).
        num_proc: processes for the conversion `map` (map-style only).
        on_invalid: "raise" stops at the first invalid row with a `RecordValidationError` naming its row and field;
            "skip" drops invalid rows, logging each one and the total to the `videorft_hf.data` logger.
        cache_dir: `datasets` cache folder.
        revision: Hub revision (Hub-native layout only).
        data_files: forwarded to `datasets.load_dataset` (Hub-native layout only).

    Returns:
        A `datasets.Dataset` (or `IterableDataset` when streaming) with the columns of `conversation_features`.

    Raises:
        RecordValidationError: an invalid row with `on_invalid="raise"` (`MediaPathError` for a path escaping the
            root), or a JSON-array file that does not parse.
        NoValidRecordsError: every record is invalid with `on_invalid="skip"`.
        DataFileNotFoundError: `path_or_repo_id` looks like a local path (see `looks_like_local_path`) and does not
            exist (raised before any Hub request).
        MediaRootError: `media_root` is given and is not an existing folder.
        ValueError: an unknown `on_invalid`, or `subset` given for raw files.

    Example:
        >>> rl = load_videorft_dataset("VideoRFT-RL-310K.jsonl", media_root="/data/videorft")  # doctest: +SKIP
        >>> sft = load_videorft_dataset("user/VideoRFT-CoT-102K", streaming=True, on_invalid="skip")  # doctest: +SKIP
        >>> next(iter(sft))["completion"][0]["role"]  # doctest: +SKIP
        'assistant'
    """
    if on_invalid not in ("raise", "skip"):
        raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
    path = os.fspath(path_or_repo_id)
    check_local_path(path)
    check_media_root(media_root)
    media_root = os.path.abspath(os.fspath(media_root)) if media_root is not None else None
    raw_files = _raw_record_files(path)

    if raw_files is not None:
        if subset is not None or data_files is not None:
            raise ValueError(
                f"subset and data_files apply to Hub-native datasets; {path!r} holds release files, which have no "
                "configs. Pass the file to load instead."
            )
        prevalidated = True
        if streaming:  # no declared features: `datasets` would encode and decode every example to apply them
            files = tuple(os.path.abspath(file) for file in raw_files)  # a tuple: a list would be split into shards
            source = datasets.IterableDataset.from_generator(
                _generate_source_rows, gen_kwargs={"files": files}, split=datasets.NamedSplit(split)
            )
            columns_in = [*RECORD_FIELDS, _INVALID]
        else:
            source = _cached_source(raw_files, cache_dir)
            columns_in = source.column_names
    else:
        prevalidated = False
        load_kwargs: dict[str, Any] = {"split": split, "streaming": streaming, "cache_dir": cache_dir}
        if revision is not None:
            load_kwargs["revision"] = revision
        if data_files is not None:
            load_kwargs["data_files"] = data_files
        if num_proc is not None and not streaming:
            load_kwargs["num_proc"] = num_proc
        if os.path.isfile(path) and path.endswith(".parquet"):
            source = datasets.load_dataset("parquet", data_files={split: path}, **load_kwargs)
        else:
            source = datasets.load_dataset(path, subset, **load_kwargs)
        columns_in = source.column_names
        if columns_in is None:  # a streaming dataset without declared features
            first = _first_rows(source, 1)
            columns_in = list(first[0]) if first else list(RECORD_FIELDS)

    if include_target is None:
        if "process" not in columns_in:
            include_target = False
        elif streaming:
            include_target = any(row.get("process") for row in _first_rows(source, 100))
        else:
            process = source.data.column("process")
            include_target = process.null_count < len(process)

    features = conversation_features(with_completion=include_target)
    keep_invalid = not streaming and on_invalid == "skip"
    if keep_invalid:
        features[_INVALID] = datasets.Value("string")
    fn_kwargs = {
        "media_root": media_root,
        "system_prompt": system_prompt,
        "with_target": include_target,
        "on_invalid": on_invalid,
        "keep_invalid": keep_invalid,
        "prevalidated": prevalidated,
        "schema": None if streaming else features.arrow_schema,
    }
    map_kwargs: dict[str, Any] = {
        "batched": True,
        "with_indices": True,
        "remove_columns": columns_in,
        "features": features,
        "fn_kwargs": fn_kwargs,
    }
    if streaming:
        return source.map(_convert_batch, **map_kwargs)
    dataset = source.map(_convert_batch, num_proc=num_proc, desc="Building conversations", **map_kwargs)
    if keep_invalid:
        dataset = _drop_invalid(dataset, len(source), path)
    return dataset


def _drop_invalid(dataset: datasets.Dataset, total: int, source: str) -> datasets.Dataset:
    """Logs every invalid placeholder row with its reason and the total, then removes them (map-style, skip).

    Raises:
        NoValidRecordsError: when every record is invalid (an empty dataset would only fail later, less clearly).
    """
    invalid = dataset.data.column(_INVALID)
    skipped = len(invalid) - invalid.null_count
    if skipped:
        first = None
        for position in pc.indices_nonzero(pc.is_valid(invalid)).to_pylist():
            error = RecordValidationError.from_dict(json.loads(invalid[position].as_py()))
            first = first or error
            logger.warning("Skipping invalid record: %s", error)
        logger.warning(
            "Skipped %d invalid of %d records (on_invalid='skip'); %d rows loaded.", skipped, total, total - skipped
        )
        if skipped == total:
            raise NoValidRecordsError(
                f"all {total} records are invalid, so no rows are left (the first: {first}). Fix the records, or "
                "check that this is the file you meant to load.",
                location=source,
            )
        # Plain Python ints: `datasets` mis-indexes a contiguous selection given as numpy unsigned integers.
        dataset = dataset.select(pc.indices_nonzero(pc.is_null(invalid)).to_pylist())
    return dataset.remove_columns(_INVALID)
