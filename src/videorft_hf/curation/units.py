"""How the units of a stage run: in threads, at most a bounded number queued, each finished unit's line appended (and
fsynced) to the stage file by the main thread, failures counted, and the stage stopped by a fatal backend error or
too many failures in a row (`CurationAborted`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from ..jsonl import append_jsonl, read_keyed_jsonl
from ..video import MediaDecodeError
from .backends import FatalBackendError

logger = logging.getLogger(__name__)


class CurationAborted(RuntimeError):
    """The run stopped: a fatal backend error, or too many failures in a row. Finished units are saved."""


def read_stage_file(path: str | os.PathLike, repair: bool = True) -> dict[str, dict]:
    """Reads a `stages/<stage>.jsonl` file: the last line written for each unit key.

    A kill while appending can leave a last line without its newline; with `repair` it is cut off the file (its unit
    counts as not done and is redone).

    Args:
        path: the stage file (a missing file reads as empty).
        repair: truncate a torn last line in place.

    Returns:
        `{key: line}`.

    Raises:
        ValueError: a complete line is not a JSON object with a `key` (the file was edited or is not a stage file).
    """
    return read_keyed_jsonl(
        path,
        repair,
        "videorft curate stage record",
        "fix or delete that line, or rerun with --redo_from <stage> / --overwrite_output_dir.",
    )


def digest(*parts: Any) -> str:
    """A short hash of `parts` (as JSON): the input hash of a unit, the digest of a stage's prompts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:20]


@dataclass
class StageRun:
    """Counters of one stage in this run (what the stage files hold is counted separately)."""

    errors: list[str] = field(default_factory=list)
    written: int = 0


class StageOutcomes:
    """What the units of one stage return, received in the main thread: a finished unit's line is appended (and
    fsynced) to the stage file; a failed unit is left unfinished and counted, and `max_consecutive_failures` failures
    in a row, an authentication error or an unknown model stop the stage (`CurationAborted`)."""

    def __init__(
        self,
        stage: str,
        stream,
        done: dict[str, dict],
        counts: Counter,
        run: StageRun,
        max_consecutive_failures: int,
        bar,
    ):
        self.stage = stage
        self.stream = stream
        self.done = done
        self.counts = counts
        self.run = run
        self.max_consecutive_failures = max_consecutive_failures
        self.bar = bar
        self.consecutive = 0

    def receive(self, key: str, input_hash: str, future: Future) -> None:
        """Records the outcome of one finished unit."""
        try:
            line = future.result()
        except FatalBackendError as error:
            raise CurationAborted(f"The {self.stage} stage stopped: {error}") from error
        except (MediaDecodeError, ImportError):
            raise  # on_bad_sample="raise", or a missing dependency: nothing later will work
        except Exception as error:  # a failed request or a unit-level error: left unfinished
            self._failed(key, error)
        else:
            self.consecutive = 0
            line = {"key": key, "input_hash": input_hash, **line}
            append_jsonl(self.stream, [line])
            self.done[key] = line
            self.run.written += 1
            self.counts[line["status"]] += 1
        self.bar.update(1)
        self.bar.set_postfix(ok=self.counts["ok"], rejected=self.counts["rejected"], errors=self.counts["error"])

    def _failed(self, key: str, error: Exception) -> None:
        self.consecutive += 1
        message = f"{key}: {type(error).__name__}: {error}"
        self.run.errors.append(message)
        logger.warning("%s %s (left unfinished; a re-run retries it)", self.stage, message)
        if self.consecutive >= self.max_consecutive_failures:
            raise CurationAborted(
                f"The {self.stage} stage stopped after {self.consecutive} failed units in a row; the last: "
                f"{message}. Check the backend, then rerun the same command to continue."
            ) from error
        self.counts["error"] += 1


def run_units(
    units: Sequence[tuple[str, str, Callable[[], dict]]],
    concurrency: int,
    thread_name_prefix: str,
    receive: Callable[[str, str, Future], None],
    on_abort: Callable[[], None] | None = None,
) -> None:
    """Runs the work of `units` (key, input hash, work) in `concurrency` threads, at most twice that many queued, and
    hands each finished future to `receive(key, input_hash, future)` in this thread, as they finish.

    When `receive` (or anything else) raises, requests in flight are not waited for (their units stay unfinished and
    are redone by a re-run) and `on_abort` is called, so that no thread keeps retrying in the background.
    """
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=thread_name_prefix)
    queue = iter(units)
    in_flight: dict[Future, tuple[str, str]] = {}

    def submit() -> None:
        while len(in_flight) < 2 * concurrency:
            unit = next(queue, None)
            if unit is None:
                return
            in_flight[pool.submit(unit[2])] = unit[:2]

    clean_exit = False
    try:
        submit()
        while in_flight:
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                receive(*in_flight.pop(future), future)
            submit()
        clean_exit = True
    finally:
        pool.shutdown(wait=clean_exit, cancel_futures=True)
        if not clean_exit and on_abort is not None:
            on_abort()
