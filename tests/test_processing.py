"""videorft_hf.processing: the one path from a row to model inputs (load_row_media, sampling rule, encoding)."""

from collections import Counter
from types import SimpleNamespace

import pytest

from videorft_hf import DataCollatorForVideoLanguageModeling, make_conversation
from videorft_hf.processing import (
    encode_prompt,
    load_row_media,
    media_sources,
    model_sampling_config,
    render_prompt,
)
from videorft_hf.testing import build_tiny_processor, write_test_image, write_test_video
from videorft_hf.video import VideoNotFoundError, VideoSamplingConfig

SAMPLING = VideoSamplingConfig(
    min_frames=4, max_frames=4, min_pixels=3136, max_pixels=3136, image_min_pixels=3136, image_max_pixels=3136
)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    write_test_video(root / "a.mp4", num_frames=8, fps=4.0, width=56, height=56)
    write_test_video(root / "b.mp4", num_frames=8, fps=4.0, width=56, height=56)
    write_test_image(root / "still.png", width=56, height=56, index=1)
    return root


def test_media_sources_reads_video_lists_and_images_before_image(media):
    assert media_sources({"video": "a.mp4", "image": None}) == [("video", "a.mp4")]
    assert media_sources({"video": ["a.mp4", None, "b.mp4"]}) == [("video", "a.mp4"), ("video", "b.mp4")]
    assert media_sources({"images": ["x.png"], "image": "y.png"}) == [("image", "x.png")]
    assert media_sources({"image": "y.png", "video": None}) == [("image", "y.png")]


def test_a_batch_memo_decodes_each_source_once_and_counts(media):
    decoded, counts = {}, Counter()
    rows = [{"video": str(media / "a.mp4"), "image": str(media / "still.png")}, {"video": str(media / "a.mp4")}]
    first, second = (load_row_media(row, SAMPLING, decoded=decoded, counts=counts) for row in rows)
    assert first.videos[0][0] is second.videos[0][0]  # one array, shared by the rows of the batch
    assert counts == {"video_decodes": 1, "video_reuses": 1, "image_decodes": 1}
    assert first.key == (("video", str(media / "a.mp4")), ("image", str(media / "still.png")))
    assert second.key == first.key[:1] and second.error is None


def test_a_bad_file_raises_or_is_captured_and_opened_once(media):
    row = {"video": str(media / "missing.mp4")}
    with pytest.raises(VideoNotFoundError, match="missing.mp4"):
        load_row_media(row, SAMPLING)
    decoded, counts = {}, Counter()
    captured = [load_row_media(row, SAMPLING, decoded=decoded, counts=counts, errors="capture") for _ in range(2)]
    assert all(isinstance(m.error, VideoNotFoundError) and not m.videos for m in captured)
    assert captured[0].error is captured[1].error and counts["video_decodes"] == 1
    with pytest.raises(TypeError, match="must hold file paths, got dict"):
        load_row_media({"video": {"bytes": b""}}, SAMPLING, errors="capture")  # a dataset bug is never skipped
    with pytest.raises(ValueError, match="errors must be"):
        load_row_media(row, SAMPLING, errors="skip")


def test_one_sampling_rule_for_model_and_processor():
    processor = build_tiny_processor("qwen3_vl")
    base = VideoSamplingConfig.from_preset("videorft-train")
    qwen = SimpleNamespace(model_type="qwen3_vl")
    assert model_sampling_config(base, qwen, processor).patch_factor == 32
    assert model_sampling_config(base, None, processor).patch_factor == 32  # only the processor known (SFT)
    assert model_sampling_config(base, SimpleNamespace(model_type="llava"), processor) == base
    assert model_sampling_config(base, None, SimpleNamespace(image_processor=None)) == base
    # the SFT collator decodes with the rule the trainer and evaluation use
    collator = DataCollatorForVideoLanguageModeling(processor, sampling_config=base)
    assert collator.sampling_config == model_sampling_config(base, qwen, processor)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_the_collator_encodes_prompts_as_rl_and_eval_do(family, media):
    processor = build_tiny_processor(family)
    config = model_sampling_config(SAMPLING, None, processor)
    record = {
        "problem_id": 1, "problem": "What happens?", "data_type": "video", "problem_type": "free-form",
        "process": "<think>It moves.</think>", "solution": "<answer>It moves.</answer>", "path": "./a.mp4",
        "data_source": "test",
    }
    row = make_conversation(record, media_root=media)
    sample = DataCollatorForVideoLanguageModeling(processor, sampling_config=SAMPLING).encode(row)
    row_media = load_row_media(row, config)
    ids, vision = encode_prompt(processor, render_prompt(processor, row["prompt"]), row_media.videos)
    assert sample["input_ids"][: len(ids)] == ids
    assert set(sample["vision"]) == set(vision)
    for key, value in vision.items():
        assert sample["vision"][key].equal(value), key


def test_cached_read_only_frames_reach_the_processor_as_writable_copies(media):
    """A `FrameCache` hands out read-only frames (shared between rows); the processor gets a writable copy (torch
    would warn about, and alias, a read-only array) with the same pixels, and the cached array stays untouched."""
    import numpy as np

    from videorft_hf.video import FrameCache

    processor = build_tiny_processor("qwen2_5_vl")
    prompt = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q?"}]}]
    row = {"video": str(media / "a.mp4"), "prompt": prompt}
    cached = load_row_media(row, SAMPLING, cache=FrameCache(1 << 24))
    frames, metadata = cached.videos[0]
    assert not frames.flags.writeable
    seen = []

    class Spy:
        def __getattr__(self, name):
            return getattr(processor, name)

        def __call__(self, **kwargs):
            seen.extend(kwargs["videos"])
            return processor(**kwargs)

    text = render_prompt(processor, row["prompt"])
    ids, vision = encode_prompt(Spy(), text, cached.videos)
    assert seen[0].flags.writeable and np.array_equal(seen[0], frames) and seen[0] is not frames
    assert (ids, vision["pixel_values_videos"].tolist()) == (
        lambda out: (out[0], out[1]["pixel_values_videos"].tolist())
    )(encode_prompt(processor, text, [(frames.copy(), metadata)]))
