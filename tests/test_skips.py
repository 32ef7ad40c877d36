"""Skipped samples (`on_bad_sample="skip"`) are bounded and recorded: a step whose samples are all skipped, or skips
above `max_skipped_fraction` of the run, stop `videorft sft` and `videorft grpo` with a typed error naming the count,
the first skips and what to fix; the run record and the card state the counts, over all processes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from videorft_hf.skips import SkippedSamplesError, SkipTally
from videorft_hf.testing import make_record, save_tiny_vlm, write_test_video

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Four video rows (CoT and RL fields), a media root holding all four clips, one missing `clip3.mp4`, and an
    existing but wrong one (no clip at all), plus a tiny model."""
    root = tmp_path_factory.mktemp("skips")
    records = []
    for i in range(4):
        write_test_video(root / "full" / "media" / f"clip{i}.mp4", num_frames=4, fps=2.0, width=56, height=56)
        record = make_record(i, "multiple choice", "A", f"./media/clip{i}.mp4", options=["A. circle", "B. square"])
        records.append({**record, "process": f"<think>Clip {i} starts with the circle.</think>"})
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    shutil.copytree(root / "full", root / "one_missing")
    (root / "one_missing" / "media" / "clip3.mp4").unlink()
    (root / "wrong" / "media").mkdir(parents=True)
    return {"jsonl": str(root / "rows.jsonl"), "root": root, "model": str(save_tiny_vlm("qwen2_5_vl", root / "model"))}


def sft_args(data, media_root: str, out: Path, *extra: str) -> list[str]:
    """The tiny SFT recipe: 2 samples per micro-batch, 2 micro-batches per step (4 samples, one epoch a step)."""
    args = ["--config", str(REPO / "recipes" / "tiny" / "sft.yaml"), "--model_name_or_path", data["model"]]
    args += ["--dataset_name", data["jsonl"], "--media_root", str(data["root"] / media_root)]
    args += ["--output_dir", str(out), "--on_bad_sample", "skip", "--save_steps", "1"]
    return [*args, *extra]


def grpo_args(data, media_root: str, out: Path, *extra: str) -> list[str]:
    """Two prompts and their 2 completions each per step."""
    args = ["--config", str(REPO / "recipes" / "tiny" / "grpo.yaml"), "--model_name_or_path", data["model"]]
    args += ["--dataset_name", data["jsonl"], "--media_root", str(data["root"] / media_root)]
    args += ["--output_dir", str(out), "--on_bad_sample", "skip", "--save_steps", "1"]
    args += ["--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "4"]
    args += ["--length_bonus", "false"]
    return [*args, *extra]


def run(command: str, args: list[str]):
    import importlib

    module = importlib.import_module(f"videorft_hf.scripts.{command}")
    return module.train(*module.make_parser().parse_args_and_config(args))


# ------------------------------------------------------------------------------------------------ the bounds
def test_tally_bounds_a_step_and_the_run_and_names_the_first_skips():
    tally = SkipTally(max_fraction=0.25)
    tally.planned = 16  # 4 skips may pass
    tally.add(4, {"bad_media": 1}, step=1)
    tally.note(["sample 7: clip7.mp4: file not found.", "sample 9: clip9.mp4: file not found"])
    tally.add(4, {"too_long": 2}, step=2)
    assert tally.summary() == {"samples": 8, "skipped": 3, "by_reason": {"bad_media": 1, "too_long": 2}}

    with pytest.raises(SkippedSamplesError) as error:
        tally.add(4, {"bad_media": 4}, step=3)
    assert str(error.value) == (
        "Every sample of step 3 was skipped (on_bad_sample='skip'), so nothing is left to train on; the run stopped "
        "before this step changed the weights. So far 7 of 12 samples were skipped (bad_media=5, too_long=2). The "
        "first: sample 7: clip7.mp4: file not found | sample 9: clip9.mp4: file not found. To fix: check the media "
        "files and media_root (the folder the records' `./` paths are relative to); raise max_length, or sample "
        "fewer or smaller frames (video_max_frames, video_max_pixels)."
    )

    over = SkipTally(max_fraction=0.25)
    over.planned = 16
    over.add(4, {"bad_media": 3}, step=1)
    over.add(4, {"bad_media": 1}, step=2)  # 4 of 16: at the bound, not above it
    with pytest.raises(SkippedSamplesError, match=r"^5 samples were skipped by step 3 \(on_bad_sample='skip'; "
                                                  r"bad_media=5\), more than max_skipped_fraction=0.25 of the 16 "
                                                  r"samples the run trains on\."):
        over.add(4, {"bad_media": 1}, step=3)


def test_tally_counts_come_back_with_a_checkpoint_state():
    """The tally's state is saved in trainer_state.json and restored when a resumed run begins."""
    from transformers import TrainerState, TrainingArguments

    tally = SkipTally(max_fraction=0.5)
    tally.planned = 100
    tally.add(8, {"bad_media": 2}, step=1)
    state = TrainerState(stateful_callbacks=[tally], max_steps=10)
    restored = SkipTally()
    args = TrainingArguments(output_dir="unused", per_device_train_batch_size=2, gradient_accumulation_steps=3,
                             use_cpu=True, report_to=[])
    restored.on_train_begin(args, TrainerState.load_from_json(_json(state)), None)
    assert restored.summary() == {"samples": 8, "skipped": 2, "by_reason": {"bad_media": 2}}
    assert restored.planned == 10 * 2 * 3  # max_steps x the global batch (one process)


def _json(state) -> str:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "trainer_state.json"
    state.save_to_json(str(path))
    return str(path)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_max_skipped_fraction_is_a_share(value):
    from videorft_hf.configs import VideoGRPOConfig, VideoSFTConfig

    for config in (VideoSFTConfig, VideoGRPOConfig):
        with pytest.raises(ValueError, match=f"max_skipped_fraction must be between 0 and 1 .*got {value}"):
            config(output_dir="unused", report_to=[], use_cpu=True, max_skipped_fraction=value)
    field = VideoSFTConfig.__dataclass_fields__["max_skipped_fraction"]
    assert field.default == 0.05 and "on_bad_sample='skip'" in field.metadata["help"]


# ------------------------------------------------------------------------------------------------ SFT
def test_sft_with_a_wrong_media_root_stops_at_the_first_step(data, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SkippedSamplesError) as error:
        run("sft", sft_args(data, "wrong", out, "--max_steps", "2"))
    message = str(error.value)
    assert message.startswith("Every sample of step 1 was skipped (on_bad_sample='skip')")
    assert "So far 4 of 4 samples were skipped (bad_media=4)." in message
    assert f"{data['root'] / 'wrong' / 'media'}/clip" in message and "file not found" in message
    assert "To fix: check the media files and media_root" in message
    assert not (out / "model.safetensors").exists() and not (out / "checkpoint-1").exists()


def test_sft_records_its_skips_in_the_run_record_and_the_card(data, tmp_path):
    """clip3 is missing: one of the 4 samples of each step (one epoch a step) is skipped, 2 of 8 over 2 steps."""
    out = tmp_path / "out"
    run("sft", sft_args(data, "one_missing", out, "--max_steps", "2", "--max_skipped_fraction", "0.25"))
    expected = {"samples": 8, "skipped": 2, "by_reason": {"bad_media": 2}}
    assert json.loads((out / "videorft_run.json").read_text())["skipped_samples"] == expected
    assert json.loads((out / "checkpoint-1" / "videorft_run.json").read_text())["skipped_samples"] == {
        "samples": 4, "skipped": 1, "by_reason": {"bad_media": 1}
    }
    assert "| Skipped samples | 2 of 8 (`on_bad_sample: skip`; bad media 2) |" in (out / "README.md").read_text()


def test_sft_stops_when_skips_pass_the_run_share(data, tmp_path):
    with pytest.raises(SkippedSamplesError, match=r"^1 sample was skipped by step 1 \(on_bad_sample='skip'; "
                                                  r"bad_media=1\), more than max_skipped_fraction=0.1 of the 8 "
                                                  r"samples the run trains on\. .*clip3\.mp4: file not found"):
        run("sft", sft_args(data, "one_missing", tmp_path / "out", "--max_steps", "2", "--max_skipped_fraction", "0.1"))


# ------------------------------------------------------------------------------------------------ GRPO
def test_grpo_with_a_wrong_media_root_stops_at_the_first_step(data, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SkippedSamplesError) as error:
        run("grpo", grpo_args(data, "wrong", out, "--max_steps", "2"))
    message = str(error.value)
    assert message.startswith("Every sample of step 1 was skipped (on_bad_sample='skip')")
    assert "So far 4 of 4 samples were skipped (bad_media=4)." in message
    assert "file not found" in message and "To fix: check the media files and media_root" in message
    assert not (out / "model.safetensors").exists() and not (out / "checkpoint-1").exists()


@pytest.mark.slow
def test_grpo_records_its_skipped_rows(data, tmp_path):
    """clip3 is missing: its 2 rows (completions) of the 8 the run generates over 2 steps are skipped."""
    out = tmp_path / "out"
    run("grpo", grpo_args(data, "one_missing", out, "--max_steps", "2", "--max_skipped_fraction", "0.25"))
    record = json.loads((out / "videorft_run.json").read_text())
    assert record["skipped_samples"] == {"samples": 8, "skipped": 2, "by_reason": {"bad_media": 2}}
    assert "| Skipped samples | 2 of 8 (`on_bad_sample: skip`; bad media 2) |" in (out / "README.md").read_text()
