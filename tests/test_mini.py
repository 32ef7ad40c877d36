"""VideoRFT-mini: deterministic, schema-valid, all five problem types, answers read back from the decoded pixels,
built by the dataset builder and loaded back with `load_videorft_dataset`."""

import collections
import hashlib
import json
from pathlib import Path

import datasets
import numpy as np
import pytest

from videorft_hf import load_videorft_dataset
from videorft_hf.data import validate_record
from videorft_hf.mini import (
    BACKGROUND,
    COLOURS,
    DIRECTIONS,
    KINDS,
    QUADRANTS,
    WORDS,
    generate_mini,
    main,
    multiple_choice_chance,
    nearest_colour,
)
from videorft_hf.video import VideoSamplingConfig, load_image, load_video_frames

# The demo's sampling: 4 frames of 56x56 per clip, images at 56x56.
DEMO = VideoSamplingConfig.from_preset(
    "video-r1-train", min_pixels=3136, max_pixels=3136, image_min_pixels=3136, image_max_pixels=3136
)
NUM_TRAIN, NUM_EVAL = 60, 24


@pytest.fixture(autouse=True)
def _isolated_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_datasets_cache"))


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return generate_mini(tmp_path_factory.mktemp("mini"), num_train=NUM_TRAIN, num_eval=NUM_EVAL, seed=0)


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def digest(root):
    files = sorted(p for p in Path(root).rglob("*") if p.is_file() and "hub" not in p.parts)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def kind(record):
    return record["data_source"].split("/", 1)[1]


def answer(record):
    return record["solution"][len("<answer>") : -len("</answer>")]


def option_text(record):
    letter = answer(record)
    return next(option.split(". ", 1)[1] for option in record["options"] if option.startswith(f"{letter}. "))


# ------------------------------------------------------------------------------------------ pixel readers
def foreground(frame):
    return np.abs(frame.astype(int) - np.array(BACKGROUND)).sum(-1) > 60


def centroid(frame):
    ys, xs = np.nonzero(foreground(frame))
    return xs.mean(), ys.mean()


def colour_of(frame):
    mask = foreground(frame)
    return nearest_colour(frame[mask].mean(0))


def count_blobs(frame):
    mask = foreground(frame)
    seen = np.zeros_like(mask)
    blobs = 0
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        blobs += 1
        stack = [start]
        seen[start] = True
        while stack:
            y, x = stack.pop()
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
    return blobs


def direction_of(frames):
    (x0, y0), (x1, y1) = centroid(frames[0]), centroid(frames[-1])
    dx, dy = x1 - x0, y1 - y0
    if max(abs(dx), abs(dy)) < 3:
        return None
    if abs(dx) > abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def check_against_pixels(record, frames):
    """Reads the record's answer off the frames, as a model would have to."""
    k, truth = kind(record), answer(record)
    height, width = frames.shape[1:3]
    if k in ("colour", "image_colour"):
        assert colour_of(frames[0]) == option_text(record)
    elif k in ("position", "image_position"):
        x, y = centroid(frames[0])
        assert QUADRANTS[(x > width / 2) + 2 * (y > height / 2)] == option_text(record)
    elif k == "direction":
        assert direction_of(frames) == option_text(record)
    elif k == "order":
        assert colour_of(frames[0]) == option_text(record)
        assert colour_of(frames[-1]) != option_text(record)
    elif k == "motion":
        assert (direction_of(frames) is not None) == (option_text(record) == "yes")
    elif k in ("count", "image_count"):
        assert count_blobs(frames[0]) == int(truth)
    elif k == "regression":
        assert abs(centroid(frames[0])[0] / width * 100 - float(truth)) <= 3
    elif k == "ocr":
        white = (frames[0].astype(int).min(-1) > 180).sum()
        assert truth in WORDS and white >= 10  # the word is drawn in white on the dark background
    elif k == "describe":
        colour, _, *motion = truth.split(" ")[1:]
        assert colour_of(frames[0]) == colour
        assert direction_of(frames) == (None if motion == ["stays", "still"] else motion[1])
    else:
        raise AssertionError(k)


# ------------------------------------------------------------------------------------------ tests
def test_records_are_valid_and_cover_every_type(mini):
    cot, rl, evaluation = read(mini["cot"]), read(mini["rl"]), read(mini["eval"])
    assert (len(cot), len(rl), len(evaluation)) == (NUM_TRAIN, NUM_TRAIN, NUM_EVAL)
    for row, record in enumerate(cot):
        validate_record(record, row, require_process=True)
        assert record["process"].startswith("<think>Let me see. ") and len(record["process"]) < 80
    for row, record in enumerate(rl + evaluation):
        assert validate_record(record, row)["process"] is None
    ids = [r["problem_id"] for r in cot + rl + evaluation]
    assert len(set(ids)) == len(ids)
    assert len({r["path"] for r in cot + rl + evaluation}) == len(ids)  # held-out clips are not training clips
    for records in (cot, rl):
        types = collections.Counter(r["problem_type"] for r in records)
        assert set(types) == {"multiple choice", "numerical", "OCR", "free-form", "regression"}
        assert types["multiple choice"] > len(records) / 2
        assert {r["data_type"] for r in records} == {"video", "image"}
    for record in cot + rl + evaluation:
        assert (root_file := Path(mini["root"]) / record["path"]).is_file(), root_file
        if record["problem_type"] == "multiple choice":
            assert 2 <= len(record["options"]) <= 4
            assert answer(record) in [option[0] for option in record["options"]]
            assert f", so {answer(record)}." in record.get("process", ", so " + answer(record) + ".")
        else:
            assert record["options"] == []


def test_answer_letters_are_balanced_within_each_kind(mini):
    letters = collections.defaultdict(collections.Counter)
    for record in read(mini["cot"]) + read(mini["rl"]):
        if record["problem_type"] == "multiple choice":
            letters[kind(record)][answer(record)] += 1
    assert {"colour", "position", "direction", "order", "motion"} <= set(letters)
    for counts in letters.values():
        assert max(counts.values()) - min(counts.values()) <= 1, counts
    chance = multiple_choice_chance(mini["eval"])
    assert 0.25 <= chance <= 0.5


def test_answers_match_the_decoded_pixels(mini):
    checked = collections.Counter()
    for record in read(mini["cot"]) + read(mini["eval"]):
        path = str(Path(mini["root"]) / record["path"])
        if record["data_type"] == "video":
            frames, metadata = load_video_frames(path, DEMO)
            assert frames.shape == (4, 56, 56, 3) and metadata.frames_indices == [0, 2, 5, 7]
        else:
            frames = np.asarray(load_image(path, DEMO))[None]
        check_against_pixels(record, frames)
        checked[kind(record)] += 1
    assert set(checked) == set(KINDS), checked


def test_generation_is_deterministic(mini, tmp_path):
    again = generate_mini(tmp_path / "again", num_train=NUM_TRAIN, num_eval=NUM_EVAL, seed=0, build=False)
    assert digest(again["root"]) == digest(mini["root"])  # records, clips and images, byte for byte
    other = generate_mini(tmp_path / "other", num_train=NUM_TRAIN, num_eval=NUM_EVAL, seed=1, build=False)
    assert read(other["cot"]) != read(mini["cot"])


def test_built_datasets_load_back(mini):
    sft = load_videorft_dataset(mini["cot_dataset"], media_root=mini["root"])
    cot = read(mini["cot"])
    assert len(sft) == NUM_TRAIN
    row = sft[0]
    assert row["completion"][0]["content"][0]["text"] == cot[0]["process"] + "\n" + cot[0]["solution"]
    media = row["video"] or row["image"]
    assert Path(media).is_file() and Path(media).is_relative_to(Path(mini["root"]).resolve())
    rl = load_videorft_dataset(mini["rl_dataset"], media_root=mini["root"])
    assert len(rl) == NUM_TRAIN and "completion" not in rl.column_names
    assert set(rl["data_type"]) == {"video", "image"}
    report = json.loads((Path(mini["rl_dataset"]) / "validation_report.json").read_text())
    assert report["rows_rejected"] == 0 and report["ignored_fields"] == {}
    held_out = load_videorft_dataset(mini["eval"], media_root=mini["root"])
    assert len(held_out) == NUM_EVAL


def test_options_can_be_shuffled_and_kinds_chosen(tmp_path):
    paths = generate_mini(tmp_path, num_train=24, num_eval=0, seed=3, mix={"colour": 1}, shuffle_options=True,
                          build=False)
    records = read(paths["cot"])
    assert {kind(r) for r in records} == {"colour"}
    assert len({tuple(r["options"]) for r in records}) > 1
    for record in records:
        frames, _ = load_video_frames(str(tmp_path / record["path"]), DEMO)
        check_against_pixels(record, frames)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="Unknown kinds"):
        generate_mini(tmp_path, mix={"colours": 1})
    with pytest.raises(ValueError, match="even"):
        generate_mini(tmp_path, width=57)
    with pytest.raises(ValueError, match="num_frames"):
        generate_mini(tmp_path, num_frames=2)


def test_command_line(tmp_path, capsys):
    assert main([str(tmp_path), "--num-train", "6", "--num-eval", "3", "--no-build"]) == 0
    paths = json.loads(capsys.readouterr().out)
    assert len(read(paths["eval"])) == 3 and "cot_dataset" not in paths
    assert set(COLOURS) and set(DIRECTIONS)  # the public vocabularies exist
