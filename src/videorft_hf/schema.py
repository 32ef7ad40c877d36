"""The record schema of the VideoRFT release: its fields, typed errors that name the row and field, validation,
media paths confined to a root, and reading release files record by record.

A record is one sample of the release (VideoRFT-CoT-102K, VideoRFT-RL-310K, or Video-R1's JSON arrays):

    {"problem_id": 7, "problem": "What colour is the car?", "data_type": "video",
     "problem_type": "multiple choice", "options": ["A. red", "B. blue"],
     "process": "<think>...</think>",  # CoT set only
     "solution": "<answer>A</answer>", "path": "./LLaVA-Video-178K/clip.mp4", "data_source": "LLaVA-Video-178K"}

Loading records as trl rows is `videorft_hf.data`'s (which re-exports these names); downloading their media is
`videorft_hf.media_download`'s.

Example:
    >>> from videorft_hf.schema import validate_record
    >>> validate_record({"problem_id": 1, "problem": "How many cars?", "data_type": "image",
    ...     "problem_type": "numerical", "solution": "<answer>3</answer>", "path": "./a.jpg", "data_source": "x"})["options"]
    []
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import datasets

from .prompts import PROBLEM_TYPES

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


def check_media_root(media_root: str | os.PathLike | None) -> None:
    """Raises `MediaRootError` when `media_root` is given and is not an existing folder."""
    if media_root is not None and not os.path.isdir(media_root):
        state = "is not a folder" if os.path.exists(media_root) else "does not exist"
        raise MediaRootError(
            f"{media_root}: the media root {state} (resolved to {os.path.abspath(media_root)}). Pass the folder the "
            "media archives were extracted into; the records' './' paths are relative to it."
        )


# --------------------------------------------------------------------------------------------- fields and validation
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


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def is_absolute_path(path: str) -> bool:
    """Absolute on POSIX or Windows (`/x`, `\\x`, `C:x`): release files are written on both."""
    return path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":" and path[0].isalpha())


def has_parent_part(path: str) -> bool:
    """Whether `path` has a `..` part (with `/` or `\\` separators)."""
    return ".." in path.replace("\\", "/").split("/")


def _path_problem(path: str) -> str | None:
    """Returns why `path` may not name a media file under a media root, or None when it may (lexical check only)."""
    example = "e.g. './LLaVA-Video-178K/clip.mp4'"
    if "\x00" in path:
        return f"path {path!r} contains a NUL character"
    if is_absolute_path(path):
        return f"path {path!r} is absolute; write it relative to the media root, starting with './' ({example})"
    if has_parent_part(path):
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
        videorft_hf.schema.RecordValidationError: Row 4, field 'problem_type': unknown value 'mcq'; expected one of \
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
        videorft_hf.schema.MediaPathError: Record, field 'path': path './../etc/passwd' contains '..' and would \
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

