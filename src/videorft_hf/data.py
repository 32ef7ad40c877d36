"""Records of the VideoRFT release: schema and validation, media paths confined to a root, trl conversational rows
and dataset loading.

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

import glob
import gzip
import hashlib
import io
import json
import logging
import os
import stat
import tarfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import datasets
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from .prompts import DEFAULT_SYSTEM_PROMPT, PROBLEM_TYPES, build_prompt_text

logger = logging.getLogger(__name__)

DATA_TYPES: tuple[str, ...] = ("video", "image")
RECORD_FIELDS: tuple[str, ...] = (
    "problem_id",
    "problem",
    "data_type",
    "problem_type",
    "options",
    "process",
    "solution",
    "path",
    "data_source",
)
REQUIRED_FIELDS: tuple[str, ...] = (
    "problem_id",
    "problem",
    "data_type",
    "problem_type",
    "solution",
    "path",
    "data_source",
)
RAW_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
ARCHIVE_SUFFIXES: tuple[str, ...] = (".zip", ".tar", ".tar.gz", ".tgz")
DEFAULT_MEDIA_PATTERNS: tuple[str, ...] = tuple(f"*{suffix}" for suffix in ARCHIVE_SUFFIXES)
EXTRACTED_MARKER_DIR = ".videorft_extracted"

# Bumped whenever validation changes, so that the cached Arrow copy of a raw file is rebuilt (it is in the cache key).
_VALIDATION_VERSION = 1
_INVALID = "_invalid"  # column carrying an invalid row's error through `datasets.map`, dropped before returning
_SOURCE_BATCH_ROWS = 10_000


# --------------------------------------------------------------------------------------------- errors
class RecordValidationError(ValueError):
    """A record breaks the schema. `.row` and `.field` say where, the message says what to fix.

    Attributes:
        reason: what is wrong and how to fix it.
        row: the record's index in its input (or its `problem_id` when no index was given, see `by_problem_id`).
        field: the offending field, or `None` when the record as a whole is wrong (for example a malformed JSON line).
        location: where the record came from, such as `"rl.jsonl line 13"`.
        by_problem_id: `True` when `row` holds the record's `problem_id` rather than an index.
    """

    def __init__(
        self,
        reason: str,
        row: int | None = None,
        field: str | None = None,
        location: str | None = None,
        by_problem_id: bool = False,
    ):
        self.reason = reason
        self.row = row
        self.field = field
        self.location = location
        self.by_problem_id = by_problem_id
        if row is None:
            where = location or "Record"  # a whole file or archive, or a record given without its index
        else:
            where = f"Record with problem_id {row}" if by_problem_id else f"Row {row}"
            if location:
                where += f" ({location})"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # keeps row and field when datasets.map(num_proc=...) sends the error across processes
        return (self.__class__, (self.reason, self.row, self.field, self.location, self.by_problem_id))

    def to_dict(self) -> dict[str, Any]:
        """Returns the error as a JSON-ready dict (used by the builder's validation report)."""
        return {
            "row": self.row,
            "field": self.field,
            "reason": self.reason,
            "location": self.location,
            "error": type(self).__name__,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordValidationError:
        """Rebuilds an error written by `to_dict`."""
        error_cls = MediaPathError if data.get("error") == "MediaPathError" else RecordValidationError
        return error_cls(data["reason"], data.get("row"), data.get("field"), data.get("location"))


class NoValidRecordsError(RecordValidationError):
    """Every record of the input is invalid (with `on_invalid="skip"`): nothing is left to train or evaluate on."""


class DataFileNotFoundError(FileNotFoundError):
    """A dataset path that looks local (see `looks_like_local_path`) does not exist; the Hub is not asked."""


class MediaRootError(FileNotFoundError):
    """The media root does not exist, or holds none of a dataset's media files."""


class MediaPathError(RecordValidationError):
    """A media path is absolute, escapes the media root (`..`, or a symlink when confined), or lacks the `./` prefix."""

    def __init__(
        self,
        reason: str,
        row: int | None = None,
        field: str | None = "path",
        location: str | None = None,
        by_problem_id: bool = False,
    ):
        super().__init__(reason, row, field, location, by_problem_id)


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


def check_media_root(media_root: str | os.PathLike | None) -> None:
    """Raises `MediaRootError` when `media_root` is given and is not an existing folder."""
    if media_root is not None and not os.path.isdir(media_root):
        state = "is not a folder" if os.path.exists(media_root) else "does not exist"
        raise MediaRootError(
            f"{media_root}: the media root {state} (resolved to {os.path.abspath(media_root)}). Pass the folder the "
            "media archives were extracted into; the records' './' paths are relative to it."
        )


# --------------------------------------------------------------------------------------------- schema
def record_features(with_process: bool = True) -> datasets.Features:
    """Returns the `datasets.Features` of stored records (the columns the `dataset_scripts/` builders write).

    Args:
        with_process: include the `process` column (the CoT set has it, the RL set does not).

    Returns:
        Features in `RECORD_FIELDS` order.

    Example:
        >>> list(record_features(with_process=False))
        ['problem_id', 'problem', 'data_type', 'problem_type', 'options', 'solution', 'path', 'data_source']
    """
    string = datasets.Value("string")
    features = {
        "problem_id": datasets.Value("int64"),
        "problem": string,
        "data_type": string,
        "problem_type": string,
        "options": datasets.List(string),
        "process": string,
        "solution": string,
        "path": string,
        "data_source": string,
    }
    if not with_process:
        del features["process"]
    return datasets.Features(features)


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


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _is_absolute(path: str) -> bool:
    """Absolute on POSIX or Windows (`/x`, `\\x`, `C:x`): release files are written on both."""
    return path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":" and path[0].isalpha())


def _has_parent_part(path: str) -> bool:
    return ".." in path.replace("\\", "/").split("/")


def _path_problem(path: str) -> str | None:
    """Returns why `path` may not name a media file under a media root, or None when it may (lexical check only)."""
    example = "e.g. './LLaVA-Video-178K/clip.mp4'"
    if "\x00" in path:
        return f"path {path!r} contains a NUL character"
    if _is_absolute(path):
        return f"path {path!r} is absolute; write it relative to the media root, starting with './' ({example})"
    if _has_parent_part(path):
        return (
            f"path {path!r} contains '..' and would escape the media root; write it relative to the root ({example})"
        )
    if not path.startswith("./"):
        return f"path {path!r} does not start with './'; write it relative to the media root as {'./' + path!r}"
    if path.endswith(("/", "\\")) or os.path.normpath(path) == ".":
        return f"path {path!r} names a directory, not a media file ({example})"
    return None


def validate_record(
    record: Mapping[str, Any],
    row: int | None = None,
    require_process: bool = False,
    *,
    location: str | None = None,
) -> dict[str, Any]:
    """Checks one record against the release schema and returns it normalised.

    Normalised means: exactly the fields of `RECORD_FIELDS` in that order, `options` a list (empty when absent or
    null), `process` None when absent, null or blank (the RL set may carry `"process": ""`). Unknown fields are not
    returned. Strings are kept byte for byte (the SFT target is `process + "\\n" + solution` as released).

    Args:
        record: one parsed JSON object.
        row: the record's index in its input, used in error messages. When None, errors name the `problem_id`.
        require_process: reject records without a `<think>...</think>` `process` (the CoT set needs one).
        location: where the record came from (`"cot.jsonl line 13"`), added to error messages.

    Returns:
        The normalised record.

    Raises:
        RecordValidationError: naming the row and the field, with what to fix.
        MediaPathError: (a `RecordValidationError`) when `path` is absolute, has a `..` part, or lacks `./`.

    Example:
        >>> record = validate_record({"problem_id": 1, "problem": "How many cars?", "data_type": "image",
        ...     "problem_type": "numerical", "solution": "<answer>3</answer>", "path": "./a.jpg", "data_source": "x"})
        >>> record["options"], record["process"]
        ([], None)
        >>> validate_record({**record, "problem_type": "mcq"}, row=4)
        Traceback (most recent call last):
        ...
        videorft_hf.data.RecordValidationError: Row 4, field 'problem_type': unknown value 'mcq'; expected one of \
['multiple choice', 'numerical', 'OCR', 'free-form', 'regression']
    """
    if not isinstance(record, Mapping):
        raise RecordValidationError(
            f"expected a JSON object with the fields {list(RECORD_FIELDS)}, got {_describe(record)}",
            row,
            None,
            location,
        )
    by_problem_id = False
    if row is None and isinstance(record.get("problem_id"), int) and not isinstance(record.get("problem_id"), bool):
        row, by_problem_id = record["problem_id"], True

    def fail(field: str, reason: str, error_cls: type[RecordValidationError] = RecordValidationError):
        raise error_cls(reason, row, field, location, by_problem_id)

    for name in REQUIRED_FIELDS:
        if name not in record:
            fail(name, f"missing required field; every record needs {list(REQUIRED_FIELDS)}")
        if record[name] is None:
            fail(name, "is null; give it a value")

    problem_id = record["problem_id"]
    if isinstance(problem_id, bool) or not isinstance(problem_id, int):
        fail("problem_id", f"expected an integer, got {_describe(problem_id)}")
    for name in ("problem", "data_type", "problem_type", "solution", "path", "data_source"):
        if not isinstance(record[name], str):
            fail(name, f"expected a string, got {_describe(record[name])}")
    if not record["problem"].strip():
        fail("problem", "is empty; give the question text")
    if record["data_type"] not in DATA_TYPES:
        fail("data_type", f"unknown value {record['data_type']!r}; expected one of {list(DATA_TYPES)}")
    problem_type = record["problem_type"]
    if problem_type not in PROBLEM_TYPES:
        hint = "".join(
            f" (did you mean {known!r}?)" for known in PROBLEM_TYPES if known.casefold() == problem_type.casefold()
        )
        fail("problem_type", f"unknown value {problem_type!r}; expected one of {list(PROBLEM_TYPES)}{hint}")

    options = record.get("options")
    if options is None:
        options = []
    if not isinstance(options, list | tuple):
        fail("options", f"expected a list of strings such as ['A. red', 'B. blue'], got {_describe(options)}")
    for index, option in enumerate(options):
        if not isinstance(option, str):
            fail("options", f"item {index} is not a string: {_describe(option)}")

    process = record.get("process")
    if isinstance(process, str) and not process.strip():
        process = None
    if process is None:
        if require_process:
            fail("process", "missing; CoT records need the reasoning as '<think>...</think>'")
    elif not isinstance(process, str):
        fail("process", f"expected a string '<think>...</think>', got {_describe(process)}")
    elif not (process.strip().startswith("<think>") and process.strip().endswith("</think>")):
        fail("process", f"must be wrapped in <think>...</think>, got {_describe(process)}")

    solution = record["solution"]
    if not (solution.strip().startswith("<answer>") and solution.strip().endswith("</answer>")):
        fail("solution", f"must be wrapped in <answer>...</answer>, got {_describe(solution)}")

    problem = _path_problem(record["path"])
    if problem is not None:
        fail("path", problem, MediaPathError)

    return {
        "problem_id": problem_id,
        "problem": record["problem"],
        "data_type": record["data_type"],
        "problem_type": problem_type,
        "options": list(options),
        "process": process,
        "solution": solution,
        "path": record["path"],
        "data_source": record["data_source"],
    }


# --------------------------------------------------------------------------------------------- media paths
def resolve_media_path(path: str, media_root: str | os.PathLike, *, confine_symlinks: bool = False) -> str:
    """Resolves a record's `./` path inside `media_root`, refusing paths that would leave it.

    The check is lexical (no file is touched): absolute paths and `..` parts are refused. Symlinks inside the root
    are followed by default, because pointing part of a media root at another disk is a normal setup;
    `fetch_media` refuses links inside downloaded archives, so a dataset cannot plant one. Pass
    `confine_symlinks=True` to also resolve symlinks and refuse a path whose real location is outside the root
    (this stats the path).

    Args:
        path: the record's `path`, such as `"./LLaVA-Video-178K/clip.mp4"`.
        media_root: the folder the release's media was extracted into.
        confine_symlinks: also refuse paths that leave the root through a symlink.

    Returns:
        The absolute, normalised path of the media file (it need not exist yet).

    Raises:
        MediaPathError: the path is absolute, contains `..`, does not start with `./`, or (with
            `confine_symlinks`) resolves outside the root.

    Example:
        >>> resolve_media_path("./clips/a.mp4", "/data/videorft")
        '/data/videorft/clips/a.mp4'
        >>> resolve_media_path("./../etc/passwd", "/data/videorft")
        Traceback (most recent call last):
        ...
        videorft_hf.data.MediaPathError: Record, field 'path': path './../etc/passwd' contains '..' and would \
escape the media root; write it relative to the root (e.g. './LLaVA-Video-178K/clip.mp4')
    """
    path = os.fspath(path)
    root = os.path.abspath(os.fspath(media_root))
    problem = _path_problem(path)
    if problem is not None:
        raise MediaPathError(problem)
    resolved = os.path.normpath(os.path.join(root, path))
    if confine_symlinks:
        real_root, real = os.path.realpath(root), os.path.realpath(resolved)
        if os.path.commonpath([real_root, real]) != real_root:
            raise MediaPathError(
                f"path {path!r} leads through a symlink to {real!r}, outside the media root {real_root!r}; "
                "move the media under the root or drop confine_symlinks"
            )
    return resolved


# --------------------------------------------------------------------------------------------- conversations
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


# --------------------------------------------------------------------------------------------- release files
def _open_text(path: str) -> io.TextIOBase:
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def _is_json_array(path: str) -> bool:
    """Whether a release file is one JSON array (Video-R1) rather than JSON lines, judged by its first character."""
    with _open_text(path) as stream:
        while True:
            chunk = stream.read(4096)
            if not chunk:
                return False
            stripped = chunk.lstrip()
            if stripped:
                return stripped[0] == "["


def iter_release_records(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> Iterator[tuple[int, str, Any]]:
    """Reads release files record by record: JSON lines (`.jsonl`, or `.json` holding lines) or one JSON array.

    The format is told from the content (a file whose first character is `[` is an array), so a `.json` file holding
    JSON lines also works. `.gz` files are read compressed. Blank lines are not records.

    Args:
        paths: one file or several, read in the given order; rows are numbered across them from 0.

    Yields:
        `(row, location, record)` where `location` is `"<file name> line <n>"` (or `item <n>`) and `record` is the
        parsed object, or a `RecordValidationError` for a line that is not valid JSON (so that callers can report
        it and carry on).

    Raises:
        RecordValidationError: a JSON-array file that does not parse, or whose top level is not an array.

    Example:
        >>> for row, location, record in iter_release_records("VideoRFT-RL-310K.jsonl"):  # doctest: +SKIP
        ...     print(row, location, record["problem_id"])
        0 VideoRFT-RL-310K.jsonl line 1 0
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    row = 0
    for path in paths:
        path = os.fspath(path)
        name = os.path.basename(path)
        if _is_json_array(path):
            with _open_text(path) as stream:
                try:
                    items = json.load(stream)
                except json.JSONDecodeError as error:
                    raise RecordValidationError(
                        f"not valid JSON ({error}); fix the file or convert it to JSON lines", None, None, name
                    ) from None
            if not isinstance(items, list):
                raise RecordValidationError(
                    f"expected a JSON array of records, got {_describe(items)}", None, None, name
                )
            for index, item in enumerate(items):
                yield row, f"{name} item {index}", item
                row += 1
            continue
        with _open_text(path) as stream:
            for line_number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                location = f"{name} line {line_number}"
                try:
                    record: Any = json.loads(line)
                except json.JSONDecodeError as error:
                    record = RecordValidationError(f"malformed JSON line ({error})", row, None, location)
                yield row, location, record
                row += 1


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


# --------------------------------------------------------------------------------------------- media download
def _marker_path(media_root: str, archive_name: str) -> str:
    return os.path.join(media_root, EXTRACTED_MARKER_DIR, archive_name.replace("/", "__") + ".done")


def _extracted_archives(media_root: str) -> set[str]:
    folder = os.path.join(media_root, EXTRACTED_MARKER_DIR)
    if not os.path.isdir(folder):
        return set()
    names = set()
    for entry in os.listdir(folder):
        if entry.endswith(".done"):
            with open(os.path.join(folder, entry), encoding="utf-8") as stream:
                names.add(json.load(stream)["archive"])
    return names


def _member_problem(name: str) -> str | None:
    if _is_absolute(name):
        return f"member {name!r} has an absolute path"
    if _has_parent_part(name):
        return f"member {name!r} contains '..' and would be written outside the media root"
    return None


def extract_media_archive(
    archive: str | os.PathLike, media_root: str | os.PathLike, *, name: str | None = None
) -> bool:
    """Extracts a `.zip` / `.tar` / `.tar.gz` / `.tgz` media archive into `media_root` once.

    A marker file under `<media_root>/.videorft_extracted/` is written after a complete extraction, so a re-run skips
    the archive and an interrupted one extracts it again. Members with absolute paths, `..` parts, or links
    (symlinks, hard links) are refused before anything of theirs is written: media archives need only files and folders.

    Args:
        archive: the archive file.
        media_root: the folder to extract into (created if missing).
        name: the archive's name in the marker (defaults to the file name; `fetch_media` uses the repo path).

    Returns:
        True if the archive was extracted, False if its marker says it already was.

    Raises:
        MediaPathError: a member would land outside the root or is a link.
        ValueError: the file is not a supported archive.

    Example:
        >>> extract_media_archive("LLaVA-Video-178K.zip", "/data/videorft")  # doctest: +SKIP
        True
    """
    archive, root = os.fspath(archive), os.path.abspath(os.fspath(media_root))
    name = name or os.path.basename(archive)
    marker = _marker_path(root, name)
    if os.path.exists(marker):
        logger.info("Skipping %s: already extracted into %s (marker %s).", name, root, marker)
        return False
    os.makedirs(root, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            for info in members:
                problem = _member_problem(info.filename)
                if problem is None and stat.S_ISLNK(info.external_attr >> 16):
                    problem = f"member {info.filename!r} is a symlink"
                if problem is not None:
                    raise MediaPathError(f"{problem}; archive refused, nothing extracted", None, None, archive)
            zipped.extractall(root)
            count = len(members)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tarred:
            count = 0

            def check(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo:
                nonlocal count
                problem = _member_problem(member.name)
                if problem is None and (member.issym() or member.islnk()):
                    problem = f"member {member.name!r} is a link"
                if problem is not None:
                    raise MediaPathError(f"{problem}; archive refused, extraction stopped", None, None, archive)
                count += 1
                try:
                    return tarfile.data_filter(member, destination)
                except tarfile.FilterError as error:  # device files and the like: not media
                    raise MediaPathError(
                        f"{error}; archive refused, extraction stopped", None, None, archive
                    ) from None

            tarred.extractall(root, filter=check)
    else:
        raise ValueError(f"{archive!r} is not a zip or tar archive; media archives must be one of {ARCHIVE_SUFFIXES}")
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    with open(marker + ".tmp", "w", encoding="utf-8") as stream:
        json.dump({"archive": name, "size": os.path.getsize(archive), "members": count}, stream)
    os.replace(marker + ".tmp", marker)
    return True


def _snapshot_download(**kwargs: Any) -> str:
    from huggingface_hub import snapshot_download  # deferred: importing the data module must not need the Hub

    return snapshot_download(**kwargs)


def fetch_media(
    repo_id: str,
    media_root: str | os.PathLike,
    allow_patterns: str | Iterable[str] | None = None,
    *,
    revision: str | None = None,
    download_dir: str | os.PathLike | None = None,
    delete_archives: bool = False,
    token: str | bool | None = None,
) -> str:
    """Downloads a dataset repo's media archives and extracts each one into `media_root` once.

    The download is `huggingface_hub.snapshot_download` (resumable: an interrupted run continues where it stopped);
    archives already extracted (per their markers, see `extract_media_archive`) are not downloaded again, even after
    `delete_archives` removed them. The media of the full release is about 310 GB: pick archives with
    `allow_patterns`.

    Args:
        repo_id: dataset repo, such as `"QiWang98/VideoRFT-Data"`.
        media_root: folder to extract into; pass the same folder to `load_videorft_dataset(media_root=...)`.
        allow_patterns: glob patterns of the repo files to fetch (default: every zip / tar archive).
        revision: repo revision.
        download_dir: where archives are downloaded (default `<media_root>/.downloads`).
        delete_archives: delete each archive once extracted, to save disk space.
        token: Hub token, as for `snapshot_download`.

    Returns:
        The absolute media root.

    Example:
        >>> root = fetch_media("QiWang98/VideoRFT-Data", "/data/videorft", allow_patterns=["*CLEVRER*"])  # doctest: +SKIP
    """
    root = os.path.abspath(os.fspath(media_root))
    os.makedirs(root, exist_ok=True)
    local_dir = (
        os.path.abspath(os.fspath(download_dir)) if download_dir is not None else os.path.join(root, ".downloads")
    )
    if isinstance(allow_patterns, str):
        allow_patterns = [allow_patterns]
    done = _extracted_archives(root)
    snapshot = _snapshot_download(
        repo_id=repo_id,
        repo_type="dataset",
        revision=revision,
        allow_patterns=list(allow_patterns or DEFAULT_MEDIA_PATTERNS),
        ignore_patterns=[glob.escape(name) for name in sorted(done)] or None,
        local_dir=local_dir,
        token=token,
    )
    archives = []
    for folder, subfolders, files in os.walk(snapshot):
        subfolders[:] = sorted(sub for sub in subfolders if sub != ".cache")  # huggingface_hub's download metadata
        archives.extend(os.path.join(folder, file) for file in sorted(files) if file.endswith(ARCHIVE_SUFFIXES))
    for archive in tqdm(archives, desc="Extracting media archives", unit="archive"):
        name = os.path.relpath(archive, snapshot).replace(os.sep, "/")
        if name in done:
            continue
        extract_media_archive(archive, root, name=name)
        if delete_archives:
            os.remove(archive)
    return root
