"""`videorft curate`: the paper's CoT data engine, resumable, over records of the release schema.

Four stages turn question-answer records into verified chain-of-thought records:

1. describe (per video or image, a vision-language model sees the frames): a structured representation, a caption
   plus per-timestamp entries with objects, actions, scene, spatial relations and interactions, validated against
   `DESCRIPTION_SCHEMA`. Unusable output (not JSON, or JSON that breaks the schema) is sent back to the model with
   what is wrong, up to `attempts` tries, then rejected with its reason.
2. reason (per question, a reasoning language model sees only the question, its options and that text): a CoT
   written with the cognition-inspired prompt (simulated viewing, task understanding, selective attention, visual
   reasoning, reflective answering with a self-check), which must end in `<think>...</think><answer>...</answer>`.
3. revise (per question, a vision-language model sees the frames and the draft): the draft revised for visual
   consistency, without description-based framing.
4. filter (local): closed-form items (multiple choice, numerical, regression, OCR) are kept when `accuracy_reward`
   of the answer reaches `min_accuracy`; open-ended items (free-form) when the semantic-consistency reward (SigLIP,
   gated on accuracy) reaches `min_semantic_consistency`; with `reject_description_framing`, a CoT that still speaks
   of "the description" or "the caption" is rejected too.

Prompts live in `videorft_hf.prompts` (`CURATION_*`); every stage's backend is chosen on its own (see
`videorft_hf.curation.backends`): an OpenAI-compatible endpoint or a transformers model in process. Frames are
sampled by `videorft_hf.video` with the run's `VideoSamplingConfig`, as in training.

Output folder:

- `stages/<stage>.jsonl`: one line per finished unit (a media file for describe, a question for the others), with
  its status ("ok" or "rejected" with `reason` and `detail`), its output and the tokens and requests it took. A line
  is appended and fsynced as soon as its unit finishes, so a run that is killed loses at most the units in flight; a
  re-run reads these files (a line torn by the kill is cut off and redone), skips what is finished and writes each
  unit once. Each line carries the hash of its inputs (`input_hash`): a unit whose inputs changed (an edited
  question, a redone upstream stage) is redone.
- `cot.jsonl`: the kept records in input order, in the release schema (`process` = `<think>...</think>`, the
  original `solution` and fields), ready for `dataset_scripts/videorft_cot_102k/build.py --input`.
- `rejected.jsonl`: every rejected record with the stage, the reason and details.
- `summary.json`: records in, kept, rejected per reason, unfinished; per stage: units in, ok, rejected per reason,
  prompt and completion tokens, requests.
- `run_config.json`: the settings each stage's results depend on; a re-run with other settings for a stage is refused
  unless `redo_from` names that stage (its results and those after it are discarded) or `overwrite_output_dir`.

A request that fails after its retries (a server down, a timeout) leaves its unit unfinished and unrecorded; the
run goes on, reports it, and a re-run retries it. `max_consecutive_failures` failures in a row stop the stage, and an
authentication error or an unknown model stops the run at once.

Example:
    ```bash
    vllm serve Qwen/Qwen2.5-VL-72B-Instruct --port 8000 &
    videorft curate --input qa.jsonl --media_root /data/videos --output_dir curated \\
        --base_url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-VL-72B-Instruct \\
        --reason_base_url https://api.deepseek.com/v1 --reason_model deepseek-reasoner \\
        --reason_api_key_env DEEPSEEK_API_KEY --concurrency 16
    ```

    ```python
    from videorft_hf.curation import CurationArguments, run_curation

    summary = run_curation(CurationArguments(input=["qa.jsonl"], media_root="/data/videos", output_dir="curated",
                                             model="Qwen/Qwen2.5-VL-7B-Instruct"))
    print(summary["kept"], summary["rejected"])
    ```
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..jsonl import output_dir_lock, write_json, write_jsonl
from ..schema import RECORD_FIELDS, RecordValidationError, iter_release_records, resolve_media_path, validate_record
from .arguments import MODEL_STAGES, STAGES, CurationArguments, build_backend
from .backends import ChatBackend
from .checks import description_validator
from .stages import Item, StageWork
from .units import StageOutcomes, StageRun, digest, read_stage_file, run_units

logger = logging.getLogger(__name__)

__all__ = ["format_summary", "run_curation"]

_RUN_CONFIG = "run_config.json"


class _Curation:
    """One run over an output folder (see `run_curation`): the stages in order, each unit's line in its stage file,
    then the outputs. What a unit does is `StageWork`'s."""

    def __init__(self, args: CurationArguments, work: StageWork):
        self.args = args
        self.work = work
        self.stage_dir = os.path.join(args.output_dir, "stages")
        self.lines: dict[str, dict[str, dict]] = {}
        self.runs: dict[str, StageRun] = {stage: StageRun() for stage in STAGES}
        self.inputs: dict[str, dict[str, str]] = {stage: {} for stage in STAGES}  # stage -> unit key -> input hash

    # ---------------------------------------------------------------- settings
    def check_run_config(self) -> None:
        args, output_dir = self.args, self.args.output_dir
        path = os.path.join(output_dir, _RUN_CONFIG)
        config = self.work.stage_configs()
        if args.overwrite_output_dir:
            for name in ("stages", "cot.jsonl", "rejected.jsonl", "summary.json", _RUN_CONFIG):
                target = os.path.join(output_dir, name)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                elif os.path.exists(target):
                    os.remove(target)
        redo = STAGES.index(args.redo_from) if args.redo_from else len(STAGES)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as stream:
                previous = json.load(stream)
            for position, stage in enumerate(STAGES):
                if position >= redo:
                    break
                old = previous.get(stage)
                if old is not None and old != config[stage]:
                    changed = sorted(name for name in config[stage] if old.get(name) != config[stage][name])
                    raise ValueError(
                        f"{output_dir}: the {stage} stage ran with other settings (changed: {', '.join(changed)}). "
                        f"Pass --redo_from {stage} to discard its results and those of the stages after it, use "
                        "another output_dir, or pass --overwrite_output_dir."
                    )
        os.makedirs(self.stage_dir, exist_ok=True)
        for stage in STAGES[redo:]:
            target = self.stage_path(stage)
            if os.path.exists(target):
                logger.info("Discarding %s (redo_from=%s).", target, args.redo_from)
                os.remove(target)
        write_json(path, config)

    def stage_path(self, stage: str) -> str:
        return os.path.join(self.stage_dir, f"{stage}.jsonl")

    # ---------------------------------------------------------------- stage runner
    def run_stage(self, stage: str, units: list[tuple[str, str, Callable[[], dict]]], concurrency: int) -> None:
        """Runs `units` (key, input hash, work) of a stage; appends and fsyncs one line per finished unit.

        Units already in the stage file with the same input hash are skipped. Only this (the main) thread writes.
        """
        from tqdm.auto import tqdm

        path = self.stage_path(stage)
        done = self.lines.setdefault(stage, read_stage_file(path))
        for key, input_hash, _ in units:
            self.inputs[stage][key] = input_hash
        pending = [unit for unit in units if done.get(unit[0], {}).get("input_hash") != unit[1]]
        counts = Counter(
            done[key]["status"]
            for key, input_hash, _ in units
            if key in done and done[key].get("input_hash") == input_hash
        )
        bar = tqdm(
            total=len(units),
            initial=len(units) - len(pending),
            desc=f"curate {stage}",
            unit="video" if stage == "describe" else "item",
            disable=not self.args.progress or not pending,
        )
        backend = self.work.backends.get(stage)
        resume = getattr(backend, "resume", None)
        if resume is not None:
            resume()  # retries are re-armed for this stage after an earlier stop
        run = self.runs[stage]
        with open(path, "a", encoding="utf-8") as stream:
            outcomes = StageOutcomes(stage, stream, done, counts, run, self.args.max_consecutive_failures, bar)
            try:
                run_units(
                    pending,
                    concurrency,
                    f"videorft-curate-{stage}",
                    outcomes.receive,
                    on_abort=getattr(backend, "cancel_pending", None),
                )
            finally:
                bar.close()
        logger.info(
            "%s: %d units, %d done before, %d written now (%d ok, %d rejected in all), %d failed.",
            stage,
            len(units),
            len(units) - len(pending),
            run.written,
            counts["ok"],
            counts["rejected"],
            len(run.errors),
        )

    # ---------------------------------------------------------------- the whole run
    def valid_line(self, stage: str, key: str) -> dict | None:
        line = self.lines.get(stage, {}).get(key)
        if line is None or line.get("input_hash") != self.inputs[stage].get(key):
            return None
        return line

    def run(self, items: list[Item], invalid: list[dict], items_in: int) -> dict:
        args = self.args
        started = time.perf_counter()
        self.check_run_config()

        # 1. describe, once per media file
        by_media: dict[str, Item] = {}
        for item in items:
            by_media.setdefault(item.record["path"], item)
        self.run_stage(
            "describe",
            [
                (path, digest(path, item.record["data_type"]), functools.partial(self.work.describe, item))
                for path, item in by_media.items()
            ],
            args.stage_setting("describe", "concurrency"),
        )
        # 2. reason, per question, from the description only
        units = []
        for item in items:
            line = self.valid_line("describe", item.record["path"])
            if line is not None and line["status"] == "ok":
                record = item.record
                question = (record["problem"], record["options"], record["problem_type"], record["data_type"])
                units.append(
                    (
                        item.key,
                        digest(question, line["description"]),
                        functools.partial(self.work.reason, item, line["description"]),
                    )
                )
        self.run_stage("reason", units, args.stage_setting("reason", "concurrency"))
        # 3. revise, per question, with the frames
        units = []
        for item in items:
            line = self.valid_line("reason", item.key)
            if line is not None and line["status"] == "ok":
                units.append(
                    (
                        item.key,
                        digest(line["input_hash"], line["output"], item.record["path"]),
                        functools.partial(self.work.revise, item, line["output"]),
                    )
                )
        self.run_stage("revise", units, args.stage_setting("revise", "concurrency"))
        # 4. filter, per question, locally
        units = []
        for item in items:
            line = self.valid_line("revise", item.key)
            if line is not None and line["status"] == "ok":
                record = item.record
                units.append(
                    (
                        item.key,
                        digest(line["input_hash"], line["output"], record["solution"], record["problem_type"]),
                        functools.partial(self.work.filter, item, line["output"]),
                    )
                )
        self.run_stage("filter", units, 1)
        return self.write_outputs(items, invalid, items_in, time.perf_counter() - started)

    def item_status(self, item: Item) -> tuple[str, dict | None]:
        """("kept" | "rejected" | "unfinished", the deciding line)."""
        for stage in STAGES:
            key = item.record["path"] if stage == "describe" else item.key
            line = self.valid_line(stage, key)
            if line is None:
                return "unfinished", None
            if line["status"] == "rejected":
                return "rejected", {"stage": stage, **line}
        return "kept", line

    def write_outputs(self, items: list[Item], invalid: list[dict], items_in: int, seconds: float) -> dict:
        output_dir = self.args.output_dir
        kept, rejected = [], list(invalid)
        unfinished = 0
        for item in items:
            status, line = self.item_status(item)
            if status == "kept":
                revised = self.valid_line("revise", item.key)["output"]
                process = revised[: revised.find("</think>") + len("</think>")]
                record = validate_record({**item.record, "process": process}, require_process=True)
                kept.append({name: record[name] for name in RECORD_FIELDS})
            elif status == "rejected":
                rejected.append(
                    {
                        "index": item.index,
                        "key": item.key,
                        "problem_id": item.record["problem_id"],
                        "path": item.record["path"],
                        "stage": line["stage"],
                        "reason": line["reason"],
                        "detail": line.get("detail"),
                    }
                )
            else:
                unfinished += 1
        rejected.sort(key=lambda row: row["index"])
        write_jsonl(os.path.join(output_dir, "cot.jsonl"), kept)
        write_jsonl(os.path.join(output_dir, "rejected.jsonl"), rejected)

        stages = {}
        for stage in STAGES:
            keys = self.inputs[stage]
            statuses: Counter = Counter()
            reasons: Counter = Counter()
            tokens = Counter()
            for key in keys:
                line = self.valid_line(stage, key)
                if line is None:
                    statuses["unfinished"] += 1
                    continue
                statuses[line["status"]] += 1
                if line["status"] == "rejected":
                    reasons[line["reason"]] += 1
            for line in self.lines.get(stage, {}).values():  # everything this output folder has spent
                tokens.update(line.get("usage", {}))
            stages[stage] = {
                "unit": "media" if stage == "describe" else "item",
                "in": len(keys),
                "ok": statuses["ok"],
                "rejected": dict(sorted(reasons.items())),
                "unfinished": statuses["unfinished"],
                "errors_this_run": len(self.runs[stage].errors),
                "prompt_tokens": tokens["prompt_tokens"],
                "completion_tokens": tokens["completion_tokens"],
                "requests": tokens["requests"],
            }
        written = sum(run.written for run in self.runs.values())
        summary = {
            "items_in": items_in,
            "invalid_records": len(invalid),
            "media": len(self.inputs["describe"]),
            "kept": len(kept),
            "rejected": dict(sorted(Counter(row["reason"] for row in rejected).items())),
            "unfinished": unfinished,
            "stages": stages,
            "this_run": {
                "seconds": round(seconds, 3),
                "units_written": written,
                "errors": [message for run in self.runs.values() for message in run.errors][:50],
            },
        }
        write_json(os.path.join(output_dir, "summary.json"), summary)
        logger.info(
            "Curated %d records: %d kept, %d rejected, %d unfinished (%s).",
            items_in,
            len(kept),
            len(rejected),
            unfinished,
            output_dir,
        )
        return summary


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary as a plain-text table: per stage units in, ok, rejected, unfinished and tokens, then the totals.

    Args:
        summary: what `run_curation` returns (or `summary.json` holds).

    Returns:
        The table.
    """
    lines = [
        f"{'stage':<10}{'unit':>6}{'in':>8}{'ok':>8}{'rejected':>10}{'unfinished':>12}{'requests':>10}"
        f"{'prompt tok':>12}{'completion tok':>16}"
    ]
    for stage, row in summary["stages"].items():
        lines.append(
            f"{stage:<10}{row['unit']:>6}{row['in']:>8}{row['ok']:>8}{sum(row['rejected'].values()):>10}"
            f"{row['unfinished']:>12}{row['requests']:>10}{row['prompt_tokens']:>12}{row['completion_tokens']:>16}"
        )
    lines.append(
        f"records in: {summary['items_in']}, kept: {summary['kept']}, rejected: {sum(summary['rejected'].values())}, "
        f"unfinished: {summary['unfinished']}"
    )
    lines += [f"  rejected {reason}: {count}" for reason, count in summary["rejected"].items()]
    return "\n".join(lines)


def _item_keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """`str(problem_id)`, with `#2`, `#3`, ... for repeats, so that every record has its own key."""
    seen: Counter = Counter()
    keys = []
    for record in records:
        seen[record["problem_id"]] += 1
        count = seen[record["problem_id"]]
        keys.append(str(record["problem_id"]) if count == 1 else f"{record['problem_id']}#{count}")
    return keys


def _load_items(args: CurationArguments) -> tuple[list[Item], list[dict], int]:
    if not args.input:
        raise ValueError("No input: pass --input with one or more release files (JSON lines or a JSON array).")
    media_root = args.media_root or os.path.dirname(os.path.abspath(args.input[0]))
    records, invalid = [], []
    count = 0
    for row, location, record in iter_release_records(args.input):
        if args.max_items is not None and count >= args.max_items:
            break
        count += 1
        try:
            if isinstance(record, RecordValidationError):
                raise record
            records.append((row, validate_record(record, row, location=location)))
        except RecordValidationError as error:
            invalid.append(
                {
                    "index": row,
                    "key": f"row:{row}",
                    "problem_id": record.get("problem_id") if isinstance(record, dict) else None,
                    "path": record.get("path") if isinstance(record, dict) else None,
                    "stage": "input",
                    "reason": "input.invalid_record",
                    "detail": str(error),
                }
            )
    keys = _item_keys([record for _, record in records])
    items = [
        Item(key, row, record, resolve_media_path(record["path"], media_root))
        for key, (row, record) in zip(keys, records, strict=True)
    ]
    return items, invalid, count


def run_curation(
    args: CurationArguments,
    *,
    describe_backend: ChatBackend | None = None,
    reason_backend: ChatBackend | None = None,
    revise_backend: ChatBackend | None = None,
    semantic_reward: Callable | None = None,
) -> dict:
    """Curates `args.input` into CoT records in `args.output_dir`, resuming from what the folder already holds.

    Args:
        args: the run's `CurationArguments`.
        describe_backend, reason_backend, revise_backend: backends to use instead of building them from `args`
            (any `ChatBackend`: a client of your own, a scripted fake in tests).
        semantic_reward: the semantic-consistency reward of the filter (e.g. one built with a local SigLIP by
            `get_semantic_consistency_reward(model=..., processor=...)`); built from `args.semantic_model` on first
            use when None (only free-form items need it).

    Returns:
        The summary (also written to `summary.json`): `items_in`, `kept`, `rejected` per reason, `unfinished`, and
        per stage the units in, ok, rejected per reason, unfinished, requests and tokens.

    Raises:
        ValueError: no input, no model for a stage, or `output_dir` holds results made with other settings.
        CurationAborted: a fatal backend error (authentication, unknown model), or `max_consecutive_failures`
            failures in a row. Everything finished before is saved; rerun to continue.
        RuntimeError: another run holds `output_dir`.

    Example:
        >>> args = CurationArguments(input=["qa.jsonl"], model="Qwen/Qwen2.5-VL-7B-Instruct")
        >>> summary = run_curation(args)  # doctest: +SKIP
    """
    description_validator()  # fail before any request when jsonschema is missing
    items, invalid, items_in = _load_items(args)
    given = {"describe": describe_backend, "reason": reason_backend, "revise": revise_backend}
    cache: dict = {}
    backends = {stage: given[stage] or build_backend(args, stage, cache) for stage in MODEL_STAGES}
    os.makedirs(args.output_dir, exist_ok=True)
    with output_dir_lock(args.output_dir, "videorft curate"):  # two runs would write units twice
        return _Curation(args, StageWork(args, backends, semantic_reward)).run(items, invalid, items_in)
