"""Records, validation, media paths, conversational rows, loading (raw JSONL / JSON arrays, streaming) and media
fetching of `videorft_hf.data`. Everything is offline: the Hub download is the only call mocked."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import pickle
import sys
import tarfile
import zipfile
from pathlib import Path

import datasets
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trl.data_utils import is_conversational

from videorft_hf import data, media_download
from videorft_hf.data import (
    MediaPathError,
    RecordValidationError,
    conversation_features,
    extract_media_archive,
    fetch_media,
    iter_release_records,
    load_videorft_dataset,
    make_conversation,
    resolve_media_path,
    validate_record,
)
from videorft_hf.prompts import PROBLEM_TYPES, build_prompt_text

datasets.disable_progress_bars()


@pytest.fixture(autouse=True)
def _isolated_datasets_cache(tmp_path, monkeypatch):
    """Loads without an explicit cache_dir go to a per-test folder, not the user's cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_datasets_cache"))


# --------------------------------------------------------------------------------------------- record factory
def make_records(n: int, *, with_process: bool = False, start: int = 0) -> list[dict]:
    """`n` valid release records cycling through both data types, all five problem types, and options present,
    empty or absent (shared with test_dataset_scripts.py)."""
    records = []
    for i in range(start, start + n):
        problem_type = PROBLEM_TYPES[i % len(PROBLEM_TYPES)]
        data_type = ("video", "image")[(i // 5) % 2]
        record = {
            "problem_id": i,
            "problem": f"Question {i}: what happens in the clip?",
            "data_type": data_type,
            "problem_type": problem_type,
            "solution": f"<answer>{'B' if problem_type == 'multiple choice' else i}</answer>",
            "path": f"./src{i % 3}/{i:05d}.{'mp4' if data_type == 'video' else 'png'}",
            "data_source": f"source-{i % 3}",
        }
        if problem_type == "multiple choice":
            record["options"] = ["A. red", "B. blue", "C. green"]
        elif i % 3 == 0:
            record["options"] = []
        # else: no options key at all
        if with_process:
            record["process"] = f"<think>Let me think about clip {i}.</think>"
        records.append(record)
    return records


def write_jsonl(path, records, extra_lines=()) -> str:
    with open(path, "w", encoding="utf-8") as stream:
        for record in records:
            stream.write(json.dumps(record) + "\n")
        for line in extra_lines:
            stream.write(line + "\n")
    return str(path)


GOOD = make_records(1)[0]


# --------------------------------------------------------------------------------------------- validation
def test_validate_record_normalises():
    record = {**GOOD, "process": "   ", "extra": 1}
    record.pop("options", None)
    normalised = validate_record(record, row=0)
    assert list(normalised) == list(data.RECORD_FIELDS)
    assert normalised["options"] == [] and normalised["process"] is None
    assert "extra" not in normalised
    cot = validate_record({**GOOD, "process": "<think>a</think>"}, require_process=True)
    assert cot["process"] == "<think>a</think>"


BAD_RECORDS = [
    # (case, change, require_process, error class, field)
    ("missing field", {"solution": None}, False, RecordValidationError, "solution"),
    ("wrong type", {"problem_id": "7"}, False, RecordValidationError, "problem_id"),
    ("bool problem_id", {"problem_id": True}, False, RecordValidationError, "problem_id"),
    ("unknown problem_type", {"problem_type": "mcq"}, False, RecordValidationError, "problem_type"),
    ("problem_type case", {"problem_type": "ocr"}, False, RecordValidationError, "problem_type"),
    ("bad data_type", {"data_type": "audio"}, False, RecordValidationError, "data_type"),
    ("options not a list", {"options": "A. red"}, False, RecordValidationError, "options"),
    ("option not a string", {"options": ["A. red", 2]}, False, RecordValidationError, "options"),
    ("empty problem", {"problem": "  "}, False, RecordValidationError, "problem"),
    ("solution without tags", {"solution": "B"}, False, RecordValidationError, "solution"),
    ("process without tags", {"process": "I think B"}, False, RecordValidationError, "process"),
    ("process missing in CoT", {}, True, RecordValidationError, "process"),
    ("path without ./", {"path": "clips/a.mp4"}, False, MediaPathError, "path"),
    ("absolute path", {"path": "/etc/passwd"}, False, MediaPathError, "path"),
    ("dot-dot escape", {"path": "./clips/../../etc/passwd"}, False, MediaPathError, "path"),
    ("directory path", {"path": "./"}, False, MediaPathError, "path"),
]


@pytest.mark.parametrize(("case", "change", "require_process", "error_cls", "field"), BAD_RECORDS)
def test_validate_record_names_row_and_field(case, change, require_process, error_cls, field):
    record = {**GOOD, **change}
    if change.get("solution", "") is None:
        del record["solution"]
    with pytest.raises(error_cls) as info:
        validate_record(record, row=41, require_process=require_process, location="rl.jsonl line 42")
    error = info.value
    assert type(error) is error_cls and isinstance(error, ValueError)
    assert (error.row, error.field) == (41, field)
    assert str(error).startswith(f"Row 41 (rl.jsonl line 42), field {field!r}: ")


def test_validation_error_without_row_names_problem_id_and_hints():
    with pytest.raises(RecordValidationError, match=r"^Record with problem_id 0, field 'problem_type'") as info:
        validate_record({**GOOD, "problem_type": "ocr"})
    assert info.value.row == 0 and info.value.by_problem_id
    assert "did you mean 'OCR'?" in str(info.value)
    with pytest.raises(RecordValidationError, match="expected a JSON object") as info:
        validate_record(["not", "a", "dict"], row=3)
    assert (info.value.row, info.value.field) == (3, None)


def test_bad_inputs_doc_quotes_the_current_messages():
    """docs/bad_inputs_data.md must quote the messages the code raises (a renamed or moved table fails here)."""
    doc = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs_data.md"
    assert doc.is_file(), f"{doc} is missing: it documents the errors bad dataset records get."
    text = doc.read_text()
    assert "Bad inputs and the errors they get" in text, f"{doc} lost its heading 'Bad inputs and the errors they get'"
    for _, change, require_process, error_cls, _ in BAD_RECORDS:
        record = {**GOOD, **change}
        if change.get("solution", "") is None:
            del record["solution"]
        with pytest.raises(error_cls) as info:
            validate_record(record, row=41, require_process=require_process, location="rl.jsonl line 42")
        assert f"| `{error_cls.__name__}` | {info.value} |" in text


def test_errors_survive_pickling():
    for error in (
        RecordValidationError("bad", 3, "problem_type", "a.jsonl line 4"),
        MediaPathError("escapes", 5, "path"),
    ):
        clone = pickle.loads(pickle.dumps(error))
        assert type(clone) is type(error) and str(clone) == str(error)
        assert (clone.row, clone.field, clone.location) == (error.row, error.field, error.location)


# --------------------------------------------------------------------------------------------- media paths
def test_resolve_media_path_inside_root(tmp_path):
    assert resolve_media_path("./a/b.mp4", tmp_path) == str(tmp_path / "a" / "b.mp4")
    assert resolve_media_path("./a/./b.mp4", str(tmp_path) + "/") == str(tmp_path / "a" / "b.mp4")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/etc/passwd", "is absolute"),
        ("./../secret.mp4", "contains '..'"),
        ("./a/../../secret.mp4", "contains '..'"),
        ("./a/..", "contains '..'"),
        ("a/b.mp4", "does not start with './'"),
        ("C:/videos/a.mp4", "is absolute"),
    ],
)
def test_resolve_media_path_rejects_escapes(tmp_path, path, message):
    with pytest.raises(MediaPathError, match=message) as info:
        resolve_media_path(path, tmp_path)
    assert info.value.field == "path"


def test_symlink_escape_is_refused_only_when_confined(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    assert resolve_media_path("./link/a.mp4", root) == str(root / "link" / "a.mp4")
    with pytest.raises(MediaPathError, match="through a symlink"):
        resolve_media_path("./link/a.mp4", root, confine_symlinks=True)
    (root / "inner").mkdir()
    (root / "inner_link").symlink_to(root / "inner", target_is_directory=True)
    assert resolve_media_path("./inner_link/a.mp4", root, confine_symlinks=True).startswith(str(root))


segment = st.text(alphabet="abcXYZ019_-. ", min_size=1, max_size=8).filter(lambda s: s not in {".", ".."})


@settings(max_examples=200, deadline=None)
@given(st.lists(segment, min_size=1, max_size=5), st.lists(st.sampled_from([".", "..", "x"]), max_size=4))
def test_resolved_paths_never_leave_the_root(parts, noise):
    root = "/data/media"
    path = "./" + "/".join(noise + parts)
    try:
        resolved = resolve_media_path(path, root)
    except MediaPathError:
        assert ".." in noise
        return
    assert ".." not in noise
    assert os.path.commonpath([root, resolved]) == root and resolved != root


# --------------------------------------------------------------------------------------------- conversations
def test_make_conversation_video_rl_row():
    record = next(r for r in make_records(10) if r["data_type"] == "video" and r["problem_type"] == "multiple choice")
    row = make_conversation(record, media_root="/m", system_prompt=None)
    assert list(row) == list(conversation_features(with_completion=False))
    assert row["prompt"] == [
        {
            "role": "user",
            "content": [
                {"type": "video"},
                {"type": "text", "text": build_prompt_text(record["problem"], "multiple choice", record["options"])},
            ],
        }
    ]
    assert "A. red\nB. blue\nC. green" in row["prompt"][0]["content"][1]["text"]
    assert row["video"] == "/m" + record["path"][1:] and row["image"] is None
    assert (row["solution"], row["problem_id"], row["data_source"]) == (
        record["solution"],
        record["problem_id"],
        record["data_source"],
    )
    assert is_conversational(row)


def test_make_conversation_cot_image_row_with_system_prompt():
    record = {**next(r for r in make_records(10, with_process=True) if r["data_type"] == "image")}
    row = make_conversation(record, system_prompt="Be brief.")
    assert row["prompt"][0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    assert row["prompt"][1]["content"][0] == {"type": "image"}
    assert row["image"] == record["path"] and row["video"] is None  # no media_root: the ./ path as is
    assert row["completion"] == [
        {"role": "assistant", "content": [{"type": "text", "text": record["process"] + "\n" + record["solution"]}]}
    ]
    assert "completion" not in make_conversation(record, include_target=False)
    with pytest.raises(RecordValidationError, match="process") as info:
        make_conversation(GOOD, include_target=True, row=9)
    assert (info.value.row, info.value.field) == (9, "process")


def test_make_conversation_rejects_escape_with_row():
    with pytest.raises(MediaPathError) as info:
        make_conversation({**GOOD, "path": "./../x.mp4"}, media_root="/m", row=12)
    assert (info.value.row, info.value.field) == (12, "path")


# --------------------------------------------------------------------------------------------- release files
def test_iter_release_records_formats(tmp_path):
    records = make_records(4)
    jsonl = write_jsonl(tmp_path / "a.jsonl", records[:2], extra_lines=["", "{oops"])
    array = tmp_path / "b.json"
    array.write_text(json.dumps(records[2:]))
    gz = tmp_path / "c.jsonl.gz"
    with gzip.open(gz, "wt") as stream:
        stream.write(json.dumps(records[0]) + "\n")
    rows = list(iter_release_records([jsonl, array, gz]))
    assert [row for row, _, _ in rows] == [0, 1, 2, 3, 4, 5]
    assert rows[2][1] == "a.jsonl line 4" and isinstance(rows[2][2], RecordValidationError)
    assert rows[3][1] == "b.json item 0" and rows[3][2] == records[2]
    assert rows[5][2] == records[0]
    broken = tmp_path / "broken.json"
    broken.write_text('[{"problem_id": 1},')
    with pytest.raises(RecordValidationError, match="not valid JSON") as info:
        list(iter_release_records(broken))
    assert info.value.location == "broken.json"


@pytest.mark.parametrize("fmt", ["jsonl", "json_array", "json_lines_named_json", "jsonl_gz"])
def test_load_raw_formats(tmp_path, fmt):
    records = make_records(25)
    if fmt == "jsonl":
        path = write_jsonl(tmp_path / "rl.jsonl", records)
    elif fmt == "json_lines_named_json":
        path = write_jsonl(tmp_path / "rl.json", records)
    elif fmt == "jsonl_gz":
        path = str(tmp_path / "rl.jsonl.gz")
        with gzip.open(path, "wt") as stream:
            stream.writelines(json.dumps(record) + "\n" for record in records)
    else:
        path = str(tmp_path / "rl.json")
        with open(path, "w") as stream:
            json.dump(records, stream)
    (tmp_path / "media").mkdir()  # the media root must exist; its files are only checked when decoded
    dataset = load_videorft_dataset(path, media_root=tmp_path / "media", cache_dir=str(tmp_path / "cache"))
    assert isinstance(dataset, datasets.Dataset) and len(dataset) == 25
    assert dataset.features == conversation_features(with_completion=False)
    assert dataset["problem_id"] == list(range(25))
    for row, record in zip(dataset, records, strict=True):
        media = str(tmp_path / "media") + record["path"][1:]
        assert row[record["data_type"]] == media
        assert row["video" if record["data_type"] == "image" else "image"] is None
        assert row["prompt"][-1]["content"][1]["text"] == build_prompt_text(
            record["problem"], record["problem_type"], record.get("options")
        )
        assert row["options"] == record.get("options", [])


def test_load_folder_of_release_files(tmp_path):
    folder = tmp_path / "release"
    folder.mkdir()
    write_jsonl(folder / "part-b.jsonl", make_records(3, start=3))
    (folder / "part-a.json").write_text(json.dumps(make_records(3)))
    (folder / "notes.txt").write_text("not data")
    dataset = load_videorft_dataset(str(folder))
    assert dataset["problem_id"] == [0, 1, 2, 3, 4, 5]  # files in name order, rows numbered across them


def test_load_streaming_matches_map_style(tmp_path):
    path = write_jsonl(tmp_path / "cot.jsonl", make_records(30, with_process=True))
    mapped = load_videorft_dataset(path, cache_dir=str(tmp_path / "cache"), system_prompt="S")
    streamed = load_videorft_dataset(path, streaming=True, system_prompt="S")
    assert isinstance(streamed, datasets.IterableDataset)
    streamed_rows = list(streamed)
    assert len(streamed_rows) == len(mapped) == 30
    for a, b in zip(mapped, streamed_rows, strict=True):
        assert a["completion"] == b["completion"]
        assert a["problem_id"] == b["problem_id"] and a["video"] == b["video"]
        assert [m["content"][-1]["text"] for m in a["prompt"]] == [m["content"][-1]["text"] for m in b["prompt"]]


def test_cot_set_gets_completion_and_rl_set_does_not(tmp_path):
    cot = load_videorft_dataset(write_jsonl(tmp_path / "cot.jsonl", make_records(6, with_process=True)))
    rl = load_videorft_dataset(write_jsonl(tmp_path / "rl.jsonl", make_records(6)))
    assert "completion" in cot.column_names and "completion" not in rl.column_names
    forced_off = load_videorft_dataset(str(tmp_path / "cot.jsonl"), include_target=False)
    assert "completion" not in forced_off.column_names
    # In a CoT set every row needs a process: a row without one is invalid, not silently target-less.
    mixed = make_records(6, with_process=True)
    del mixed[4]["process"]
    with pytest.raises(RecordValidationError) as info:
        load_videorft_dataset(write_jsonl(tmp_path / "mixed.jsonl", mixed))
    assert (info.value.row, info.value.field) == (4, "process")


def _with_bad_rows(tmp_path):
    records = make_records(20)
    records[3]["problem_type"] = "mcq"
    records[7]["path"] = "./../../etc/passwd"
    records[11]["problem_id"] = "eleven"
    return write_jsonl(tmp_path / "rl.jsonl", records, extra_lines=["{not json"])


def test_invalid_rows_raise_with_row_and_field(tmp_path):
    path = _with_bad_rows(tmp_path)
    with pytest.raises(RecordValidationError) as info:
        load_videorft_dataset(path, cache_dir=str(tmp_path / "cache"))
    assert (info.value.row, info.value.field, info.value.location) == (3, "problem_type", "rl.jsonl line 4")
    with pytest.raises(RecordValidationError) as info:
        list(load_videorft_dataset(path, streaming=True))
    assert (info.value.row, info.value.field, info.value.location) == (3, "problem_type", "rl.jsonl line 4")
    records = make_records(3)
    records[2]["path"] = "./../../etc/passwd"
    with pytest.raises(MediaPathError) as info:
        list(load_videorft_dataset(write_jsonl(tmp_path / "escape.jsonl", records), streaming=True))
    assert (info.value.row, info.value.field) == (2, "path")


def test_invalid_rows_raise_across_processes(tmp_path):
    path = _with_bad_rows(tmp_path)
    with pytest.raises(RecordValidationError) as info:
        load_videorft_dataset(path, cache_dir=str(tmp_path / "cache"), num_proc=2)
    assert (info.value.row, info.value.field) == (3, "problem_type")


@pytest.mark.parametrize("streaming", [False, True])
def test_skipped_rows_are_counted_and_logged(tmp_path, caplog, streaming):
    path = _with_bad_rows(tmp_path)
    for _attempt in range(2):  # the second map-style load comes from the cache and must log the skips again
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="videorft_hf.data"):
            dataset = load_videorft_dataset(
                path, cache_dir=str(tmp_path / "cache"), on_invalid="skip", streaming=streaming
            )
            ids = [row["problem_id"] for row in dataset]
        assert ids == [i for i in range(20) if i not in (3, 7, 11)]
        skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipping invalid record")]
        assert len(skips) == 4
        assert any("Row 3 (rl.jsonl line 4), field 'problem_type'" in m for m in skips)
        assert any("Row 7 (rl.jsonl line 8), field 'path'" in m for m in skips)
        assert any("Row 11 (rl.jsonl line 12), field 'problem_id'" in m for m in skips)
        assert any("Row 20 (rl.jsonl line 21): malformed JSON line" in m for m in skips)
        if not streaming:
            assert any("Skipped 4 invalid of 21 records" in r.getMessage() for r in caplog.records)
        if streaming:
            break


@pytest.mark.parametrize(
    "bad, kept",
    [((0,), [1, 2]), ((2,), [0, 1]), ((0, 2), [1]), ((), [0, 1, 2])],
    ids=["first", "last", "first-and-last", "none"],
)
def test_skip_keeps_the_valid_rows_wherever_the_bad_ones_are(tmp_path, caplog, bad, kept):
    records = make_records(3)
    for row in bad:
        records[row]["problem_type"] = "mcq"
    path = write_jsonl(tmp_path / "rl.jsonl", records)
    with caplog.at_level(logging.WARNING, logger="videorft_hf.data"):
        dataset = load_videorft_dataset(path, media_root=tmp_path, cache_dir=str(tmp_path / "cache"), on_invalid="skip")
    assert [row["problem_id"] for row in dataset] == kept
    assert dataset[len(kept) - 1]["video"].startswith(str(tmp_path))
    totals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipped")]
    assert totals == ([f"Skipped {len(bad)} invalid of 3 records (on_invalid='skip'); {len(kept)} rows loaded."] if bad else [])


def test_skip_with_every_row_invalid_is_a_typed_error(tmp_path):
    records = make_records(3)
    for record in records:
        record["problem_type"] = "mcq"
    path = write_jsonl(tmp_path / "rl.jsonl", records)
    with pytest.raises(data.NoValidRecordsError) as info:
        load_videorft_dataset(path, cache_dir=str(tmp_path / "cache"), on_invalid="skip")
    message = str(info.value)
    assert message.startswith(f"{path}: all 3 records are invalid, so no rows are left (the first: Row 0 (rl.jsonl line 1)")
    assert "field 'problem_type'" in message and isinstance(info.value, RecordValidationError)


def test_load_rejects_bad_arguments(tmp_path):
    path = write_jsonl(tmp_path / "rl.jsonl", make_records(2))
    with pytest.raises(ValueError, match="on_invalid"):
        load_videorft_dataset(path, on_invalid="ignore")
    with pytest.raises(ValueError, match="subset and data_files apply to Hub-native"):
        load_videorft_dataset(path, subset="cot")


def test_unreadable_json_array_raises_and_leaves_no_partial_cache(tmp_path):
    broken = tmp_path / "Video-R1-260k.json"
    broken.write_text(json.dumps(make_records(3))[:-20])
    with pytest.raises(RecordValidationError, match=r"^Video-R1-260k.json: not valid JSON"):
        load_videorft_dataset(str(broken), cache_dir=str(tmp_path / "cache"))
    assert not [name for _, _, files in os.walk(tmp_path / "cache") for name in files]


def test_raw_cache_is_refreshed_when_the_file_changes(tmp_path):
    path = write_jsonl(tmp_path / "rl.jsonl", make_records(5))
    assert len(load_videorft_dataset(path, cache_dir=str(tmp_path / "cache"))) == 5
    write_jsonl(path, make_records(8))
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse filesystem clocks
    assert len(load_videorft_dataset(path, cache_dir=str(tmp_path / "cache"))) == 8


def test_loading_never_opens_media(tmp_path):
    """Media files exist under the root; an audit hook records every file opened while loading."""
    media_root = tmp_path / "media"
    records = make_records(12)
    for record in records:
        media = media_root / record["path"][2:]
        media.parent.mkdir(parents=True, exist_ok=True)
        media.write_bytes(b"not really a video")
    path = write_jsonl(tmp_path / "rl.jsonl", records)
    opened: list[str] = []
    active = [True]

    def hook(event, args):
        if active[0] and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)  # audit hooks cannot be removed; `active` switches this one off
    try:
        dataset = load_videorft_dataset(path, media_root=media_root, cache_dir=str(tmp_path / "cache"))
        rows = list(dataset) + list(load_videorft_dataset(path, media_root=media_root, streaming=True))
    finally:
        active[0] = False
    assert len(rows) == 24
    assert any(name.endswith("rl.jsonl") for name in opened)  # the hook does see opens
    assert not [name for name in opened if name.startswith(str(media_root))]


# --------------------------------------------------------------------------------------------- media archives
def _zip(path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as zipped:
        for name, payload in members.items():
            zipped.writestr(name, payload)
    return str(path)


def _tar(path, members: dict[str, bytes], symlink: tuple[str, str] | None = None) -> str:
    with tarfile.open(path, "w:gz") as tarred:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tarred.addfile(info, io.BytesIO(payload))
        if symlink:
            info = tarfile.TarInfo(symlink[0])
            info.type, info.linkname = tarfile.SYMTYPE, symlink[1]
            tarred.addfile(info)
    return str(path)


def test_extract_once_with_marker(tmp_path):
    archive = _zip(tmp_path / "clips.zip", {"CLEVRER/a.mp4": b"a", "CLEVRER/b.mp4": b"b"})
    root = tmp_path / "media"
    assert extract_media_archive(archive, root) is True
    assert (root / "CLEVRER" / "a.mp4").read_bytes() == b"a"
    (root / "CLEVRER" / "a.mp4").write_bytes(b"edited")
    assert extract_media_archive(archive, root) is False  # marker: skipped, nothing overwritten
    assert (root / "CLEVRER" / "a.mp4").read_bytes() == b"edited"
    assert resolve_media_path("./CLEVRER/b.mp4", root) == str(root / "CLEVRER" / "b.mp4")


@pytest.mark.parametrize(
    ("kind", "members", "symlink", "message"),
    [
        ("zip", {"../evil.mp4": b"x"}, None, "contains '..'"),
        ("zip", {"/abs/evil.mp4": b"x"}, None, "absolute path"),
        ("tar", {"ok.mp4": b"x", "a/../../evil.mp4": b"x"}, None, "contains '..'"),
        ("tar", {"ok.mp4": b"x"}, ("link", "/etc"), "is a link"),
    ],
)
def test_hostile_archives_are_refused(tmp_path, kind, members, symlink, message):
    archive = (_zip if kind == "zip" else _tar)(tmp_path / f"bad.{kind}", members, *([symlink] if symlink else []))
    root = tmp_path / "media"
    with pytest.raises(MediaPathError, match=message):
        extract_media_archive(archive, root)
    assert not (tmp_path / "evil.mp4").exists()
    assert not (root / data.EXTRACTED_MARKER_DIR).exists()  # not marked: a fixed archive is extracted next run


def test_fetch_media_downloads_extracts_and_resumes(tmp_path, monkeypatch):
    remote = tmp_path / "remote"
    (remote / "media").mkdir(parents=True)
    _zip(remote / "media" / "clevrer.zip", {"CLEVRER/a.mp4": b"a"})
    _tar(remote / "media" / "llava.tar.gz", {"LLaVA/b.mp4": b"b"})
    calls = []

    def fake_snapshot_download(*, repo_id, repo_type, allow_patterns, ignore_patterns, local_dir, **kwargs):
        calls.append({"repo_id": repo_id, "repo_type": repo_type, "allow": allow_patterns, "ignore": ignore_patterns})
        import fnmatch
        import shutil

        for folder, _, files in os.walk(remote):
            for file in files:
                name = os.path.relpath(os.path.join(folder, file), remote)
                if any(fnmatch.fnmatch(name, p) for p in allow_patterns) and not any(
                    fnmatch.fnmatch(name, p) for p in ignore_patterns or []
                ):
                    os.makedirs(os.path.join(local_dir, os.path.dirname(name)), exist_ok=True)
                    shutil.copy(os.path.join(folder, file), os.path.join(local_dir, name))
        return local_dir

    monkeypatch.setattr(media_download, "_snapshot_download", fake_snapshot_download)
    root = tmp_path / "media_root"
    assert fetch_media("org/VideoRFT-Data", root, delete_archives=True) == str(root)
    assert (root / "CLEVRER" / "a.mp4").read_bytes() == b"a" and (root / "LLaVA" / "b.mp4").read_bytes() == b"b"
    assert calls[0]["repo_type"] == "dataset" and calls[0]["ignore"] is None
    assert not (root / ".downloads" / "media" / "clevrer.zip").exists()  # deleted once extracted
    (root / "CLEVRER" / "a.mp4").write_bytes(b"edited")
    fetch_media("org/VideoRFT-Data", root, delete_archives=True)
    assert calls[1]["ignore"] == ["media/clevrer.zip", "media/llava.tar.gz"]  # not downloaded again
    assert (root / "CLEVRER" / "a.mp4").read_bytes() == b"edited"


# --------------------------------------------------------------------------------------------- local paths that do not exist
@pytest.mark.parametrize(
    "path", ["does_not_exist.jsonl", "Video-R1-eval/eval_vsibench.json", "./data", "../data", "a/b/c", "rl.parquet"]
)
def test_a_missing_local_path_is_file_not_found_not_a_hub_error(tmp_path, monkeypatch, path):
    def no_hub(*args, **kwargs):
        raise AssertionError("the Hub was asked")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    with pytest.raises(data.DataFileNotFoundError) as info:
        load_videorft_dataset(path)
    assert str(info.value).startswith(f"{path}: dataset file not found (resolved to {os.path.abspath(path)}).")
    assert isinstance(info.value, FileNotFoundError)


def test_hub_ids_do_not_look_local():
    for repo_id in ("Video-R1/Video-R1-eval", "QiWang98/VideoRFT-Data", "squad"):
        assert not data.looks_like_local_path(repo_id)


def test_a_missing_media_root_is_found_at_load_time(tmp_path):
    path = write_jsonl(tmp_path / "rl.jsonl", make_records(2))
    with pytest.raises(data.MediaRootError, match=r"^no/such/dir: the media root does not exist"):
        load_videorft_dataset(path, media_root="no/such/dir")
    with pytest.raises(data.MediaRootError, match="is not a folder"):
        load_videorft_dataset(path, media_root=path)
