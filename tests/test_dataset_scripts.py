"""The `dataset_scripts/` builders: release files in, a Hub-native folder out that `datasets.load_dataset` and
`load_videorft_dataset` read with no remote code; counts reconcile, rejections are reported, rebuilds are byte-identical."""

from __future__ import annotations

import importlib.util
import json
import os
import runpy
import sys
from pathlib import Path

import datasets
import pytest
import yaml
from test_data import make_records, write_jsonl  # tests/ is on sys.path under pytest's default import mode
from trl.data_utils import is_conversational

from videorft_hf.data import RecordValidationError, conversation_features, load_videorft_dataset, record_features
from videorft_hf.dataset_builder import build_dataset
from videorft_hf.prompts import build_prompt_text

SCRIPTS = Path(__file__).resolve().parents[1] / "dataset_scripts"
datasets.disable_progress_bars()


@pytest.fixture(autouse=True)
def _isolated_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_datasets_cache"))


def load_build_script(name: str):
    spec = importlib.util.spec_from_file_location(f"build_{name}", SCRIPTS / name / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Invalid rows mixed into the 1,000 valid ones: (line inserted after valid record i, raw line, field in the report)
def _bad_lines(with_process: bool) -> list[tuple[int, str, str | None]]:
    base = make_records(1, with_process=with_process, start=5000)[0]

    def changed(**change):
        record = {**base, **change}
        return json.dumps({key: value for key, value in record.items() if value is not ...})

    return [
        (10, changed(solution=...), "solution"),  # missing field
        (200, changed(problem_id="12"), "problem_id"),  # wrong type
        (350, changed(problem_type="MCQ"), "problem_type"),
        (500, changed(data_type="audio"), "data_type"),
        (640, changed(path="./clips/../../../etc/passwd"), "path"),
        (800, changed(path="/abs/clip.mp4"), "path"),
        (900, '{"problem_id": 1, "problem": ', None),  # malformed JSON line
    ]


def _write_input(path: Path, with_process: bool) -> tuple[str, list[dict], list[tuple[int, str | None]]]:
    """1,000 valid mixed records with the bad lines interleaved; returns the file, the valid records and the
    expected rejections as (row, field)."""
    records = make_records(1000, with_process=with_process)
    bad = dict((after, (line, field)) for after, line, field in _bad_lines(with_process))
    lines, expected = [], []
    for i, record in enumerate(records):
        lines.append(json.dumps(record))
        if i in bad:
            expected.append((len(lines), bad[i][1]))
            lines.append(bad[i][0])
    path.write_text("\n".join(lines) + "\n")
    return str(path), records, expected


def test_rl_build_then_load(tmp_path):
    script = load_build_script("videorft_rl_310k")
    source, records, expected = _write_input(tmp_path / "VideoRFT-RL-310K.jsonl", with_process=False)
    out = tmp_path / "rl"
    assert (
        script.main(script.SPEC, ["--input", source, "--output", str(out), "--shard-rows", "300", "--no-progress"])
        == 0
    )

    report = json.loads((out / "validation_report.json").read_text())
    assert (report["rows_read"], report["rows_written"], report["rows_rejected"]) == (1007, 1000, 7)
    assert report["rows_read"] == report["rows_written"] + len(report["rejections"])
    assert [(r["row"], r["field"]) for r in report["rejections"]] == expected
    assert all(r["reason"] and r["location"].startswith("VideoRFT-RL-310K.jsonl line ") for r in report["rejections"])
    assert sorted(os.listdir(out / "data")) == [f"train-{i:05d}-of-00004.parquet" for i in range(4)]
    assert [shard["rows"] for shard in report["shards"]] == [300, 300, 300, 100]
    assert report["counts"]["data_type"] == {"image": 500, "video": 500}
    assert set(report["counts"]["problem_type"]) == {"multiple choice", "numerical", "OCR", "free-form", "regression"}

    readme = (out / "README.md").read_text()
    assert "$" not in readme  # every template placeholder was filled
    header = yaml.safe_load(readme.split("---\n")[1])
    assert header["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}
    ]
    assert [f["name"] for f in header["dataset_info"]["features"]] == list(record_features(with_process=False))
    assert header["dataset_info"]["splits"][0]["num_examples"] == 1000

    stored = datasets.load_dataset(str(out), split="train")
    assert stored.features == record_features(with_process=False)
    assert len(stored) == 1000 and stored["problem_id"] == list(range(1000))
    assert stored[3]["options"] == records[3].get("options", [])

    (tmp_path / "media").mkdir()
    conversations = load_videorft_dataset(str(out), media_root=tmp_path / "media")
    assert len(conversations) == 1000 and conversations.features == conversation_features(with_completion=False)
    for row, record in zip(conversations, records, strict=True):
        assert is_conversational(row)
        user = row["prompt"][-1]
        assert user["role"] == "user" and user["content"][0]["type"] == record["data_type"]
        assert user["content"][1]["text"] == build_prompt_text(
            record["problem"], record["problem_type"], record.get("options")
        )
        assert row[record["data_type"]] == str(tmp_path / "media") + record["path"][1:]

    streamed = load_videorft_dataset(str(out), media_root=tmp_path / "media", streaming=True)
    streamed_ids = [row["problem_id"] for row in streamed]
    assert streamed_ids == list(range(1000))


def test_cot_build_from_json_array_then_load(tmp_path):
    script = load_build_script("videorft_cot_102k")
    records = make_records(120, with_process=True)
    no_process = dict(records[7])
    del no_process["process"]
    source = tmp_path / "VideoRFT-CoT-102K.json"
    source.write_text(json.dumps(records[:50] + [no_process] + records[50:]))
    out = tmp_path / "cot"
    result = build_dataset(str(source), out, script.SPEC, progress=False)
    assert (result.rows_read, result.rows_written, result.rows_rejected) == (121, 120, 1)
    assert result.report["rejections"][0]["row"] == 50
    assert result.report["rejections"][0]["field"] == "process"
    assert result.report["rejections"][0]["location"] == "VideoRFT-CoT-102K.json item 50"
    assert [os.path.basename(path) for path in result.shards] == ["train-00000-of-00001.parquet"]

    stored = datasets.load_dataset(str(out), split="train")
    assert stored.features == record_features(with_process=True)
    sft = load_videorft_dataset(str(out), system_prompt="You are helpful.")
    assert len(sft) == 120 and sft.features == conversation_features(with_completion=True)
    row = sft[0]
    assert row["prompt"][0] == {"role": "system", "content": [{"type": "text", "text": "You are helpful."}]}
    assert row["completion"] == [
        {
            "role": "assistant",
            "content": [{"type": "text", "text": records[0]["process"] + "\n" + records[0]["solution"]}],
        }
    ]
    streamed = list(load_videorft_dataset(str(out), streaming=True, system_prompt="You are helpful."))
    assert len(streamed) == 120 and streamed[0]["completion"] == row["completion"]


def test_rl_builder_ignores_process_and_extra_fields_but_reports_them(tmp_path):
    script = load_build_script("videorft_rl_310k")
    records = [{**record, "note": "x"} for record in make_records(10, with_process=True)]
    result = build_dataset(write_jsonl(tmp_path / "in.jsonl", records), tmp_path / "out", script.SPEC, progress=False)
    assert result.report["ignored_fields"] == {"note": 10, "process": 10}
    assert "process" not in datasets.load_dataset(str(tmp_path / "out"), split="train").column_names


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_rebuild_is_byte_identical(tmp_path):
    script = load_build_script("videorft_rl_310k")
    source, _, _ = _write_input(tmp_path / "in.jsonl", with_process=False)
    first = build_dataset(source, tmp_path / "a", script.SPEC, shard_rows=256, progress=False)
    build_dataset(source, tmp_path / "b", script.SPEC, shard_rows=256, progress=False)
    assert len(first.shards) == 4
    tree_a, tree_b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert list(tree_a) == list(tree_b) and tree_a == tree_b
    assert b"created_at" not in tree_a["README.md"]
    # Rebuilding into the same folder with another shard size replaces the old shards: none is left for data/train-*.
    build_dataset(source, tmp_path / "a", script.SPEC, shard_rows=600, progress=False)
    assert sorted(os.listdir(tmp_path / "a" / "data")) == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    assert len(datasets.load_dataset(str(tmp_path / "a"), split="train")) == 1000


def test_unreadable_input_file_stops_the_build(tmp_path):
    script = load_build_script("videorft_rl_310k")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"problem_id": 1}')
    with pytest.raises(RecordValidationError, match="not valid JSON"):
        build_dataset(str(broken), tmp_path / "out", script.SPEC, progress=False)


def test_push_to_hub_uploads_the_folder(tmp_path, monkeypatch):
    """--push-to-hub hands the built folder to videorft_hf.hub.push_dataset (one commit; tested in test_hub.py)."""
    from types import SimpleNamespace

    import videorft_hf.hub

    calls = []

    def fake_push(folder, repo_id, **kwargs):
        calls.append((str(folder), repo_id, kwargs))
        return SimpleNamespace(commit_url="https://huggingface.co/datasets/user/rl/commit/abc")

    monkeypatch.setattr(videorft_hf.hub, "push_dataset", fake_push)
    source = write_jsonl(tmp_path / "in.jsonl", make_records(5))
    argv = [
        "build.py",
        "--input",
        source,
        "--output",
        str(tmp_path / "out"),
        "--push-to-hub",
        "user/rl",
        "--no-progress",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:  # the script's `if __name__ == "__main__"` path
        runpy.run_path(str(SCRIPTS / "videorft_rl_310k" / "build.py"), run_name="__main__")
    assert exit_info.value.code == 0
    assert calls == [(str(tmp_path / "out"), "user/rl", {"private": None})]
    assert 'load_videorft_dataset("user/rl"' in (tmp_path / "out" / "README.md").read_text()
