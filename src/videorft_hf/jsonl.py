"""Files of resumable runs (`videorft eval`, `videorft curate`): append-only JSON lines keyed by `key`, JSON and
JSON-lines files written atomically, and the output-folder lock."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TextIO

logger = logging.getLogger(__name__)


def read_keyed_jsonl(path: str | os.PathLike, repair: bool, what: str, fix_hint: str) -> dict[str, dict]:
    """Reads a file of JSON objects with a `key`, one per line; a torn last line (a crash mid-write) is dropped.

    Args:
        path: the file (a missing file reads as empty).
        repair: also cut the torn line off the file, so the next append starts on a fresh line.
        what: names the record kind in errors, e.g. "videorft eval record".
        fix_hint: what to do about a corrupt line, appended to the error.

    Returns:
        `{key: record}` (a later line with the same key wins).

    Raises:
        ValueError: a complete line is not a JSON object with a `key`; the message names the file and line.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as stream:
        data = stream.read()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        logger.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run.", path, len(data) - end)
        if repair:
            with open(path, "r+b") as stream:
                stream.truncate(end)
                stream.flush()
                os.fsync(stream.fileno())
        data = data[:end]
    records: dict[str, dict] = {}
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} line {number} is not valid JSON ({error}); {fix_hint}") from error
        if not isinstance(record, dict) or "key" not in record:
            raise ValueError(f"{path} line {number} is not a {what} (no 'key').")
        records[str(record["key"])] = record
    return records


def append_jsonl(stream: TextIO, records: Iterable[Mapping[str, Any]]) -> None:
    """Appends `records` as JSON lines to an open text stream, then flushes and fsyncs it: a finished record survives
    a crash (a crash mid-write leaves at most a torn last line, which `read_keyed_jsonl` drops)."""
    for record in records:
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")
    stream.flush()
    os.fsync(stream.fileno())


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Writes `data` as indented JSON atomically (a temporary file, fsynced, then renamed over `path`), so a crash
    never leaves half a file.

    Example:
        >>> write_json("results.json", {"score": 62.1})  # doctest: +SKIP
    """
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as stream:
        json.dump(data, stream, ensure_ascii=False, indent=2)
        stream.write("\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    """Writes `rows` as JSON lines atomically (a temporary file, fsynced, then renamed over `path`)."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as stream:
        append_jsonl(stream, rows)
    os.replace(tmp, path)


@contextlib.contextmanager
def output_dir_lock(output_dir: str | os.PathLike, command: str) -> Iterator[None]:
    """Holds an exclusive lock on a run's output folder: two runs appending to the same files would write records
    twice. POSIX only (elsewhere no lock is taken).

    Raises:
        RuntimeError: another `command` run holds the folder.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(os.path.join(os.fspath(output_dir), ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"Another {command} run is writing to {output_dir}; wait for it or use another output_dir."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
