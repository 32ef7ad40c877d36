"""DataCollatorForVideoLanguageModeling: label masks token by token, media decoding, raise-or-skip, workers."""

import logging
import pickle

import pytest
import torch
from torch.utils.data import DataLoader

from videorft_hf import DataCollatorForVideoLanguageModeling, SampleTooLongError, make_conversation
from videorft_hf.processing import VisionTokenMismatchError
from videorft_hf.prompts import R1_SYSTEM_PROMPT
from videorft_hf.testing import (
    build_tiny_processor,
    build_tiny_vlm,
    write_non_video_file,
    write_test_image,
    write_test_video,
    write_truncated_video,
)
from videorft_hf.video import ImageDecodeError, VideoDecodeError, VideoNotFoundError, VideoSamplingConfig

# 4 frames of 56x56 (Qwen3-VL: 32x64) per video and one 56x56 image: a handful of vision tokens per row.
SAMPLING = VideoSamplingConfig(
    min_frames=4, max_frames=4, min_pixels=3136, max_pixels=3136, image_min_pixels=3136, image_max_pixels=3136
)
TARGET = "<think>Let me think: the ball moves.</think>\n<answer>B</answer>"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    write_test_video(root / "clip.mp4", num_frames=16, fps=8.0, width=112, height=112)
    write_test_image(root / "still.png", width=112, height=112, index=3)
    write_truncated_video(root / "clip.mp4", root / "truncated.mp4", keep_fraction=0.4)
    write_non_video_file(root / "text.mp4")
    return root


@pytest.fixture(scope="module")
def processors():
    return {family: build_tiny_processor(family) for family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")}


def record(problem_id: int, data_type: str, path: str, target: str = TARGET) -> dict:
    process, solution = target.split("\n", 1)
    return {
        "problem_id": problem_id,
        "problem": f"What happens in sample {problem_id}?",
        "data_type": data_type,
        "problem_type": "multiple choice",
        "options": ["A. nothing", "B. the ball moves"],
        "process": process,
        "solution": solution,
        "path": path,
        "data_source": "test",
    }


def video_row(media, problem_id=1, path="./clip.mp4", **kwargs):
    return make_conversation(record(problem_id, "video", path), media_root=media, **kwargs)


def image_row(media, problem_id=2, path="./still.png", **kwargs):
    return make_conversation(record(problem_id, "image", path), media_root=media, **kwargs)


def text_row(problem_id=3, target="<think>Two plus two.</think>\n<answer>4</answer>"):
    return {
        "prompt": [{"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]}],
        "completion": [{"role": "assistant", "content": [{"type": "text", "text": target}]}],
        "video": None,
        "image": None,
        "problem_id": problem_id,
    }


def collator_for(processor, **kwargs):
    return DataCollatorForVideoLanguageModeling(processor, sampling_config=SAMPLING, **kwargs)


def test_label_mask_token_by_token_on_mixed_batch(media, processors):
    processor = processors["qwen2_5_vl"]
    tokenizer = processor.tokenizer
    rows = [video_row(media, system_prompt=R1_SYSTEM_PROMPT), image_row(media), text_row()]
    batch = collator_for(processor)(rows)

    video_pad, image_pad = tokenizer.convert_tokens_to_ids(["<|video_pad|>", "<|image_pad|>"])
    video_tokens = int(batch["video_grid_thw"].prod()) // 4  # merge 2x2
    image_tokens = int(batch["image_grid_thw"].prod()) // 4
    assert (video_tokens, image_tokens) == (8, 4)  # 4 frames of 56x56 and one 56x56 image
    length = batch["input_ids"].shape[1]
    for row, example in enumerate(rows):
        # Expected sequence, built independently of the collator: the prompt rendered with its generation prompt and
        # the placeholders expanded by hand, then the completion with the template's `<|im_end|>\n`.
        prompt_text = processor.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)
        prompt_text = prompt_text.replace("<|video_pad|>", "<|video_pad|>" * video_tokens)
        prompt_text = prompt_text.replace("<|image_pad|>", "<|image_pad|>" * image_tokens)
        target = example["completion"][0]["content"][0]["text"]
        prompt_ids = tokenizer.encode(prompt_text, add_special_tokens=False)
        trained_ids = tokenizer.encode(target + "<|im_end|>", add_special_tokens=False)
        newline_ids = tokenizer.encode("\n", add_special_tokens=False)
        ids = prompt_ids + trained_ids + newline_ids
        padding = length - len(ids)
        expected_ids = ids + [tokenizer.pad_token_id] * padding
        expected_labels = [-100] * len(prompt_ids) + trained_ids + [-100] * len(newline_ids) + [-100] * padding
        expected_mask = [1] * len(ids) + [0] * padding
        expected_types = [2 if t == video_pad else 1 if t == image_pad else 0 for t in ids] + [0] * padding

        assert batch["input_ids"][row].tolist() == expected_ids
        labels = batch["labels"][row].tolist()
        mismatches = [(i, labels[i], expected_labels[i]) for i in range(length) if labels[i] != expected_labels[i]]
        assert not mismatches, f"row {row}: (position, label, expected) {mismatches[:10]}"
        assert batch["attention_mask"][row].tolist() == expected_mask
        assert batch["mm_token_type_ids"][row].tolist() == expected_types
        # The trained span starts right after `<|im_start|>assistant\n` and ends with `<|im_end|>`.
        first = next(i for i, label in enumerate(labels) if label != -100)
        marker = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
        assert batch["input_ids"][row][first - len(marker) : first].tolist() == marker
        trained = [label for label in labels if label != -100]
        assert tokenizer.decode(trained) == target + "<|im_end|>"
    assert batch["pixel_values_videos"].shape[0] == int(batch["video_grid_thw"].prod())
    assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod())
    # Frames 0, 5, 10, 15 of a 16-frame 8 fps clip: sampled at 2 fps, so one temporal patch of 2 frames is 1 s.
    assert batch["second_per_grid_ts"].tolist() == [1.0]


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_each_family_collates_a_mixed_batch_the_model_accepts(family, media, processors):
    model, processor = build_tiny_vlm(family)
    collator = collator_for(processor)
    assert collator.sampling_config.patch_factor == (32 if family == "qwen3_vl" else 28)
    rows = [video_row(media), image_row(media), text_row()]
    batch = collator(rows)
    assert set(batch) >= {"input_ids", "attention_mask", "labels", "mm_token_type_ids", "pixel_values_videos"}
    assert ("second_per_grid_ts" in batch) == (family == "qwen2_5_vl")
    for row, example in enumerate(rows):
        trained = batch["labels"][row][batch["labels"][row] != -100]
        assert processor.tokenizer.decode(trained) == example["completion"][0]["content"][0]["text"] + "<|im_end|>"
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_missing_and_corrupt_media_raise_naming_the_sample(media, processors):
    collator = collator_for(processors["qwen2_5_vl"])
    with pytest.raises(VideoNotFoundError, match=r"problem_id=7.*on_bad_sample='skip'"):
        collator([text_row(), video_row(media, problem_id=7, path="./missing.mp4")])
    for name in ("truncated.mp4", "text.mp4"):
        with pytest.raises(VideoDecodeError, match=rf"{name}.*problem_id=8"):
            collator([video_row(media, problem_id=8, path=f"./{name}")])
    with pytest.raises(ImageDecodeError, match="problem_id=9"):
        collator([image_row(media, problem_id=9, path="./missing.png")])
    assert collator.num_skipped == 0


def test_skip_drops_bad_samples_counts_and_logs_each(media, processors, caplog):
    collator = collator_for(processors["qwen2_5_vl"], on_bad_sample="skip")
    good = video_row(media, problem_id=1)
    with caplog.at_level(logging.WARNING, logger="videorft_hf.collators"):
        batch = collator([video_row(media, problem_id=11, path="./missing.mp4"), good, text_row(problem_id=12)])
    assert batch["input_ids"].shape[0] == 2  # the bad sample is dropped, never replaced
    assert batch["labels"].ne(-100).sum(dim=1).gt(0).all()
    assert collator.skipped_samples == {"bad_media": 1, "too_long": 0}
    assert any("problem_id=11" in message and "missing.mp4" in message for message in caplog.messages)
    # The survivors are encoded exactly as in a batch of their own.
    alone = collator([good, text_row(problem_id=12)])
    for key in ("input_ids", "labels", "pixel_values_videos", "second_per_grid_ts"):
        assert torch.equal(batch[key], alone[key])


def test_batch_whose_samples_are_all_skipped_trains_on_nothing(media, processors):
    collator = collator_for(processors["qwen2_5_vl"], on_bad_sample="skip")
    batch = collator([video_row(media, problem_id=21, path="./truncated.mp4"), image_row(media, 22, "./gone.png")])
    assert collator.skipped_samples["bad_media"] == 2
    assert batch["input_ids"].shape[0] == 1
    assert (batch["labels"] == -100).all()
    assert "pixel_values" in batch and int((batch["mm_token_type_ids"] == 1).sum()) >= 1  # the vision tower runs


def test_too_long_sample_raises_or_is_skipped_never_cut(media, processors):
    processor = processors["qwen2_5_vl"]
    length = collator_for(processor)([video_row(media)])["input_ids"].shape[1]
    assert collator_for(processor, max_length=length)([video_row(media)])["input_ids"].shape[1] == length
    with pytest.raises(SampleTooLongError, match=r"problem_id=1.*max_length=" + str(length - 1)) as info:
        collator_for(processor, max_length=length - 1)([video_row(media)])
    assert (info.value.length, info.value.vision_tokens) == (length, 8)
    assert pickle.loads(pickle.dumps(info.value)).length == length

    collator = collator_for(processor, max_length=length - 1, on_bad_sample="skip")
    batch = collator([video_row(media), text_row()])
    assert batch["input_ids"].shape[0] == 1 and "pixel_values_videos" not in batch
    assert collator.skipped_samples == {"bad_media": 0, "too_long": 1}


def test_media_that_disagrees_with_its_placeholders_always_raises(media, processors):
    collator = collator_for(processors["qwen2_5_vl"], on_bad_sample="skip")
    row = video_row(media)
    with pytest.raises(VisionTokenMismatchError, match="1 {'type': 'video'} block"):
        collator([{**row, "video": None}])
    without_column = {key: value for key, value in row.items() if key != "video"}
    with pytest.raises(KeyError, match="remove_unused_columns=False"):
        collator([without_column])
    with pytest.raises(KeyError, match="`prompt` and `completion`"):
        collator([{"messages": row["prompt"]}])


def test_pad_to_multiple_of_and_in_memory_images(media, processors):
    from PIL import Image

    collator = collator_for(processors["qwen2_vl"], pad_to_multiple_of=64)
    row = image_row(media)
    row["image"] = Image.new("RGB", (56, 56), (0, 128, 255))
    batch = collator([row, text_row()])
    assert batch["input_ids"].shape[1] % 64 == 0
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4]]


def test_dataloader_workers_give_the_same_batches_and_share_skip_counts(media, processors):
    collator = collator_for(processors["qwen2_5_vl"], on_bad_sample="skip", frame_cache_bytes=1 << 24)
    collator([video_row(media)])  # fills this process's frame cache, which must not travel to the workers
    clone = pickle.loads(pickle.dumps(collator))
    assert clone._cache is None and clone.sampling_config == collator.sampling_config

    rows = [video_row(media, problem_id=i) for i in range(4)] + [text_row(4), video_row(media, 5, "./missing.mp4")]
    serial = list(DataLoader(rows, batch_size=2, collate_fn=collator, num_workers=0))
    skipped_serial = collator.num_skipped
    # spawned as VideoSFTConfig starts them: a worker forked from this process, which has decoded video, can hang
    parallel = list(DataLoader(rows, batch_size=2, collate_fn=collator, num_workers=2, multiprocessing_context="spawn"))
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert skipped_serial == 1
    assert collator.skipped_samples == {"bad_media": 2, "too_long": 0}  # the worker's skip is counted here too


def test_from_config_reads_the_sft_config(processors):
    from videorft_hf.configs import VideoSFTConfig

    args = VideoSFTConfig(
        output_dir="unused",
        report_to=[],
        use_cpu=True,
        bf16=False,
        max_length=2048,
        on_bad_sample="skip",
        video_min_frames=8,
        video_max_frames=8,
        activation_checkpointing=False,
        frame_cache_bytes=1024,
    )
    collator = DataCollatorForVideoLanguageModeling.from_config(processors["qwen3_vl"], args)
    assert (collator.max_length, collator.on_bad_sample, collator.frame_cache_bytes) == (2048, "skip", 1024)
    assert collator.sampling_config.max_frames == 8 and collator.sampling_config.patch_factor == 32
    with pytest.raises(ValueError, match="on_bad_sample"):
        DataCollatorForVideoLanguageModeling(processors["qwen3_vl"], on_bad_sample="ignore")
