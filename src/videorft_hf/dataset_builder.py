"""Turns the release's JSONL / JSON-array files into a Hub-native dataset repository that `datasets.load_dataset`
reads with no remote code (`datasets` >= 4 no longer runs loading scripts).

The output folder holds:

    README.md                             dataset card: YAML `configs:` (data_files) and `dataset_info` (features)
    data/train-00000-of-0000N.parquet     record-schema shards of a fixed number of rows each
    validation_report.json                rows read = rows written + rows rejected, each rejection with row, field, reason

Rows are stored in the record schema (`videorft_hf.schema.record_features`); conversational rows are derived at load
time by `load_videorft_dataset`, so prompts stay in `videorft_hf.prompts`. A rebuild from the same input writes
identical bytes: input order is kept, shards hold a fixed number of rows, and no timestamp is written anywhere.

Each dataset has a folder under `dataset_scripts/` whose `build.py` calls `main` with its `DatasetSpec`:

    python dataset_scripts/videorft_rl_310k/build.py --input VideoRFT-RL-310K.jsonl --output out/rl \\
        [--shard-rows 100000] [--push-to-hub user/VideoRFT-RL-310K]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import os
import string
import sys
from collections.abc import Sequence
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from .schema import RECORD_FIELDS, RecordValidationError, iter_release_records, record_features, validate_record

DEFAULT_SHARD_ROWS = 100_000
ROW_GROUP_ROWS = 10_000  # bounds the builder's memory and the rows a streaming reader holds at once
REPORT_NAME = "validation_report.json"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What differs between the datasets built here: name, card and whether records carry a CoT `process`.

    Args:
        name: repository-style name, such as `"VideoRFT-RL-310K"`.
        card_template: README body with `string.Template` placeholders (`$pretty_name`, `$inputs`: the input files
            as read, with their SHA-256, `$num_rows`, `$num_rejected`, `$num_read`, `$stats`, `$load_example`); the
            builder prepends the YAML header.
        require_process: the CoT set: every record needs `process`, which is stored. Otherwise `process` is not stored.
        pretty_name: human-readable title.
        config_name: the `configs:` entry name.
        split: the split the rows go to.
        shard_rows: rows per parquet shard (the last shard holds the rest).
        license: SPDX id for the card, or None to leave it to the uploader (check the upstream release's terms).
        tags: card tags.
        task_categories: card task categories.
    """

    name: str
    card_template: str | os.PathLike
    require_process: bool = False
    pretty_name: str | None = None
    config_name: str = "default"
    split: str = "train"
    shard_rows: int = DEFAULT_SHARD_ROWS
    license: str | None = None
    tags: tuple[str, ...] = ("video", "reasoning", "chain-of-thought", "videorft")
    task_categories: tuple[str, ...] = ("video-text-to-text",)


@dataclasses.dataclass
class BuildResult:
    """What `build_dataset` wrote: the output folder, its shards and the reconciled row counts."""

    output_dir: str
    shards: list[str]
    rows_read: int
    rows_written: int
    rows_rejected: int
    report: dict[str, Any]


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _size_category(rows: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < bound:
            return label
    return "1M<n<10M"


class _ShardWriter:
    """Writes rows into `data/<split>-NNNNN.parquet.tmp` shards of `shard_rows` rows, row groups of ROW_GROUP_ROWS."""

    def __init__(self, data_dir: str, split: str, schema: pa.Schema, shard_rows: int):
        self.data_dir, self.split, self.schema, self.shard_rows = data_dir, split, schema, shard_rows
        self.paths: list[str] = []
        self.shard_sizes: list[int] = []
        self.num_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[dict[str, Any]] = []
        self._in_shard = 0

    def add(self, row: dict[str, Any]) -> None:
        self._buffer.append(row)
        if len(self._buffer) == ROW_GROUP_ROWS or self._in_shard + len(self._buffer) == self.shard_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            path = os.path.join(self.data_dir, f"{self.split}-{len(self.paths):05d}.parquet.tmp")
            # Explicit settings so the bytes depend on the rows and the pyarrow version only.
            self._writer = pq.ParquetWriter(path, self.schema, compression="snappy", write_statistics=True)
            self.paths.append(path)
            self.shard_sizes.append(0)
        table = pa.Table.from_pylist(self._buffer, schema=self.schema)
        self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.num_bytes += table.nbytes
        self._in_shard += len(self._buffer)
        self.shard_sizes[-1] += len(self._buffer)
        self._buffer = []
        if self._in_shard == self.shard_rows:
            self._writer.close()
            self._writer, self._in_shard = None, 0

    def close(self) -> list[str]:
        """Flushes, closes and renames the shards to `<split>-NNNNN-of-MMMMM.parquet`; returns their paths."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if not self.paths:  # no valid row: one empty shard keeps the layout loadable and the schema declared
            path = os.path.join(self.data_dir, f"{self.split}-00000.parquet.tmp")
            pq.write_table(self.schema.empty_table(), path, compression="snappy")
            self.paths.append(path)
            self.shard_sizes.append(0)
        final = []
        for index, path in enumerate(self.paths):
            name = f"{self.split}-{index:05d}-of-{len(self.paths):05d}.parquet"
            os.replace(path, os.path.join(self.data_dir, name))
            final.append(os.path.join(self.data_dir, name))
        return final


def _render_card(
    spec: DatasetSpec, features: datasets.Features, result: dict[str, Any], shard_files: list[str], repo_id: str | None
) -> str:
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    card_data = DatasetCardData(
        pretty_name=spec.pretty_name or spec.name,
        license=spec.license,
        language=["en"],
        task_categories=list(spec.task_categories),
        tags=list(spec.tags),
        size_categories=[_size_category(result["rows_written"])],
    )
    splits = SplitDict()
    splits.add(SplitInfo(name=spec.split, num_bytes=result["num_bytes"], num_examples=result["rows_written"]))
    info = DatasetInfo(
        features=features,
        splits=splits,
        download_size=sum(os.path.getsize(path) for path in shard_files),
        dataset_size=result["num_bytes"],
    )
    DatasetInfosDict({spec.config_name: info}).to_dataset_card_data(card_data)
    MetadataConfigs(
        {spec.config_name: {"data_files": [{"split": spec.split, "path": f"data/{spec.split}-*"}]}}
    ).to_dataset_card_data(card_data)

    stats = ["| column | value | rows |", "|---|---|---|"]
    for column in ("data_type", "problem_type"):
        for value, count in sorted(result["counts"][column].items()):
            stats.append(f"| {column} | {value} | {count} |")
    load_example = (
        "```python\n"
        "from videorft_hf import load_videorft_dataset\n\n"
        f'dataset = load_videorft_dataset("{repo_id or "<this repo id>"}", media_root="/data/videorft")\n'
        "```"
    )
    # The files this build read, named as given (a user's own file is not the release's).
    inputs = [f"`{entry['file']}` (SHA-256 `{entry['sha256'][:12]}...`)" for entry in result["inputs"]]
    inputs_text = inputs[0] if len(inputs) == 1 else ", ".join(inputs[:-1]) + " and " + inputs[-1]
    with open(spec.card_template, encoding="utf-8") as stream:
        body = string.Template(stream.read()).substitute(
            inputs=("the input file " if len(inputs) == 1 else "the input files ") + inputs_text,
            pretty_name=spec.pretty_name or spec.name,
            num_rows=result["rows_written"],
            num_read=result["rows_read"],
            num_rejected=result["rows_rejected"],
            stats="\n".join(stats),
            load_example=load_example,
        )
    return "---\n" + card_data.to_yaml() + "\n---\n\n" + body.lstrip("\n")


class EmptyDatasetError(ValueError):
    """Every record of a build was rejected: no shard and no card are written, only the validation report."""


def build_dataset(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    spec: DatasetSpec,
    *,
    shard_rows: int | None = None,
    progress: bool = True,
    repo_id: str | None = None,
) -> BuildResult:
    """Validates release records and writes them as a Hub-native dataset folder (see the module docstring).

    Invalid records are not written; each is listed in `validation_report.json` with its row, location, field and
    reason, and `rows_read == rows_written + rows_rejected` always holds. Unknown fields are not stored and are counted
    under `ignored_fields`; so is a non-empty `process` in a set that does not store it.

    Args:
        inputs: release files (JSONL or JSON arrays), read in the given order.
        output_dir: folder to write; earlier shards of the same split are replaced.
        spec: the dataset's name, card and schema choices.
        shard_rows: rows per parquet shard (default `spec.shard_rows`).
        progress: show a tqdm progress bar.
        repo_id: the Hub repo the folder is meant for, used in the card's loading example.

    Returns:
        A `BuildResult` with the shard paths, the counts and the report.

    Raises:
        RecordValidationError: an input file is unreadable as a whole (for example a truncated JSON array).
        EmptyDatasetError: every record was rejected (the report is written; the message gives the main reasons).
        ValueError: `shard_rows` is not positive.

    Example:
        >>> from videorft_hf.dataset_builder import DatasetSpec, build_dataset
        >>> spec = DatasetSpec("VideoRFT-RL-310K", "dataset_scripts/videorft_rl_310k/README.md")  # doctest: +SKIP
        >>> build_dataset("VideoRFT-RL-310K.jsonl", "out/rl", spec).rows_written  # doctest: +SKIP
        310000
    """
    shard_rows = spec.shard_rows if shard_rows is None else shard_rows
    if shard_rows <= 0:
        raise ValueError(f"shard_rows must be a positive number of rows, got {shard_rows}")
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    inputs = [os.fspath(path) for path in inputs]
    output_dir = os.fspath(output_dir)
    data_dir = os.path.join(output_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    for entry in os.listdir(data_dir):  # a rebuild must not leave shards of a previous shard count behind
        if entry.startswith(f"{spec.split}-") and entry.endswith((".parquet", ".parquet.tmp")):
            os.remove(os.path.join(data_dir, entry))

    features = record_features(with_process=spec.require_process)
    stored = list(features)
    writer = _ShardWriter(data_dir, spec.split, features.arrow_schema, shard_rows)
    rows_read = 0
    rejections: list[dict[str, Any]] = []
    ignored: collections.Counter[str] = collections.Counter()
    counts: dict[str, collections.Counter[str]] = {
        "data_type": collections.Counter(),
        "problem_type": collections.Counter(),
    }
    seen_ids: set[int] = set()
    duplicate_ids = 0
    records = iter_release_records(inputs)
    for row, location, record in tqdm(records, desc=f"Building {spec.name}", unit=" rows", disable=not progress):
        rows_read += 1
        try:
            if isinstance(record, RecordValidationError):
                raise record
            normalised = validate_record(record, row, require_process=spec.require_process, location=location)
        except RecordValidationError as error:
            rejections.append(error.to_dict())
            continue
        ignored.update(key for key in record if key not in RECORD_FIELDS)
        if not spec.require_process and normalised["process"] is not None:
            ignored["process"] += 1
        if normalised["problem_id"] in seen_ids:
            duplicate_ids += 1
        seen_ids.add(normalised["problem_id"])
        for column in counts:
            counts[column][normalised[column]] += 1
        writer.add({name: normalised[name] for name in stored})
    shard_files = writer.close()

    rows_written = sum(writer.shard_sizes)
    if rows_read != rows_written + len(rejections):  # the report's promise; a failure here is a bug in this module
        raise AssertionError(f"rows read {rows_read} != written {rows_written} + rejected {len(rejections)}")
    shard_sizes = writer.shard_sizes
    if rows_written == 0:  # no empty shard and no card: only the report, which says why each row was rejected
        for path in shard_files:
            os.remove(path)
        shard_files, shard_sizes = [], []
    report: dict[str, Any] = {
        "dataset": spec.name,
        "config_name": spec.config_name,
        "split": spec.split,
        "inputs": [
            {"file": os.path.basename(path), "bytes": os.path.getsize(path), "sha256": _sha256(path)}
            for path in inputs
        ],
        "rows_read": rows_read,
        "rows_written": rows_written,
        "rows_rejected": len(rejections),
        "rejections": rejections,
        "ignored_fields": dict(sorted(ignored.items())),
        "duplicate_problem_ids": duplicate_ids,
        "counts": {column: dict(sorted(counter.items())) for column, counter in counts.items()},
        "num_bytes": writer.num_bytes,
        "shards": [
            {"file": f"data/{os.path.basename(path)}", "rows": size, "sha256": _sha256(path)}
            for path, size in zip(shard_files, shard_sizes, strict=True)
        ],
    }
    report_path = os.path.join(output_dir, REPORT_NAME)
    with open(report_path, "w", encoding="utf-8") as stream:
        json.dump(report, stream, indent=2, ensure_ascii=False)
        stream.write("\n")
    if rows_written == 0:
        reasons = collections.Counter(f"{r['field']}: {r['reason']}" for r in rejections).most_common(3)
        raise EmptyDatasetError(
            f"{spec.name}: none of the {rows_read} rows read from {', '.join(inputs)} is valid, so nothing was "
            f"written. Most common reasons: {'; '.join(f'{reason} ({n} rows)' for reason, n in reasons) or 'none'}. "
            f"Every rejected row is listed in {report_path}."
        )
    with open(os.path.join(output_dir, "README.md"), "w", encoding="utf-8") as stream:
        stream.write(_render_card(spec, features, report, shard_files, repo_id))
    return BuildResult(output_dir, shard_files, rows_read, rows_written, len(rejections), report)


def make_parser(spec: DatasetSpec) -> argparse.ArgumentParser:
    """Returns the command-line parser of a dataset's `build.py`."""
    parser = argparse.ArgumentParser(
        description=f"Build {spec.name} as a Hub-native dataset (parquet shards, README `configs:`, validation report)."
    )
    parser.add_argument("--input", nargs="+", required=True, help="release file(s): JSONL or a JSON array")
    parser.add_argument("--output", required=True, help="output folder (the dataset repository layout)")
    parser.add_argument(
        "--shard-rows", type=int, default=spec.shard_rows, help=f"rows per parquet shard (default {spec.shard_rows})"
    )
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the folder to this Hub dataset repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(spec: DatasetSpec, argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of a dataset's `build.py`: build, print the counts, optionally push.

    Args:
        spec: the dataset built.
        argv: arguments (default `sys.argv[1:]`).

    Returns:
        The exit status: 0, or 1 when every record was rejected (the reasons are printed).
    """
    args = make_parser(spec).parse_args(argv)
    try:
        result = build_dataset(
            args.input,
            args.output,
            spec,
            shard_rows=args.shard_rows,
            progress=not args.no_progress,
            repo_id=args.push_to_hub,
        )
    except EmptyDatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"{spec.name}: read {result.rows_read} rows, wrote {result.rows_written} in {len(result.shards)} shard(s), "
        f"rejected {result.rows_rejected} (see {os.path.join(result.output_dir, REPORT_NAME)})"
    )
    if args.push_to_hub:
        from .hub import push_dataset  # one commit, token never written, offline mode gives a clear error

        url = push_dataset(result.output_dir, args.push_to_hub, private=args.private or None).commit_url
        print(f"Pushed to {url}")
    return 0
