"""Tests of the offline test kit: tiny models run end to end, test videos carry decodable frame indices."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hashlib

import av
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
    SiglipImageProcessor,
    SiglipModel,
    SiglipProcessor,
)
from transformers.video_utils import VideoMetadata

from videorft_hf.testing import (
    MAX_FRAME_INDEX,
    REASONING_TOKENS,
    TINY_VLM_FAMILIES,
    build_tiny_qwen2_5_vl,
    build_tiny_qwen2_vl,
    build_tiny_qwen3_vl,
    build_tiny_siglip,
    build_tiny_tokenizer,
    build_tiny_vlm,
    decode_frame_index,
    encode_frame_index,
    make_index_frames,
    save_tiny_siglip,
    save_tiny_vlm,
    write_non_video_file,
    write_test_image,
    write_test_video,
    write_truncated_video,
)

PROCESSOR_CLASSES = {
    "qwen2_vl": (Qwen2VLProcessor, Qwen2VLVideoProcessor),
    "qwen2_5_vl": (Qwen2_5_VLProcessor, Qwen2VLVideoProcessor),
    "qwen3_vl": (Qwen3VLProcessor, Qwen3VLVideoProcessor),
}
VIDEO_PROMPT = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
IMAGE_PROMPT = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]}]


@pytest.fixture(scope="module", params=TINY_VLM_FAMILIES)
def tiny_vlm(request):
    model, processor = build_tiny_vlm(request.param)
    return request.param, model, processor


def _same_weights(a, b) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


def _factor(processor) -> int:
    return processor.video_processor.patch_size * processor.video_processor.merge_size


def _video_inputs(processor, num_frames=4, total=8, fps=4.0, size=(2, 3)):
    """Frames i * total // num_frames of a `total`-frame clip, sides multiples of the resize factor."""
    height, width = size[0] * _factor(processor), size[1] * _factor(processor)
    indices = [i * total // num_frames for i in range(num_frames)]
    frames = np.stack([encode_frame_index(i, height, width) for i in indices])
    metadata = VideoMetadata(total_num_frames=total, fps=fps, frames_indices=indices, width=width, height=height)
    text = processor.apply_chat_template(VIDEO_PROMPT, tokenize=False, add_generation_prompt=True)
    return text, frames, metadata


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer and chat template
# ---------------------------------------------------------------------------------------------------------------


def test_tokenizer_round_trips_text_and_matches_config_ids():
    model, processor = build_tiny_qwen2_5_vl()
    tokenizer = processor.tokenizer
    text = "Hello, World! 0123456789 ~`{}[]|\\ <think>x</think><answer>(B)</answer> café"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == text  # reasoning tags are plain tokens
    for token in REASONING_TOKENS:
        assert len(tokenizer(token)["input_ids"]) == 1
    config = model.config
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == config.image_token_id == processor.image_token_id
    assert tokenizer.convert_tokens_to_ids("<|video_pad|>") == config.video_token_id == processor.video_token_id
    assert tokenizer.convert_tokens_to_ids("<|vision_start|>") == config.vision_start_token_id
    assert tokenizer.convert_tokens_to_ids("<|vision_end|>") == config.vision_end_token_id
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert len(tokenizer) <= config.text_config.vocab_size


@pytest.mark.parametrize("family", TINY_VLM_FAMILIES)
def test_chat_template_renders_media_placeholders(family):
    tokenizer = build_tiny_tokenizer(family)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "video"}, {"type": "image"}, {"type": "text", "text": "Q?"}]},
        {"role": "assistant", "content": "<think>t</think><answer>A</answer>"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>"
        "<|vision_start|><|image_pad|><|vision_end|>Q?<|im_end|>\n"
        "<|im_start|>assistant\n<think>t</think><answer>A</answer><|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(VIDEO_PROMPT, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("What happens?<|im_end|>\n<|im_start|>assistant\n")
    # Qwen2/2.5-VL insert a default system prompt, Qwen3-VL does not.
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.") == (family != "qwen3_vl")


# ---------------------------------------------------------------------------------------------------------------
# Tiny models end to end
# ---------------------------------------------------------------------------------------------------------------


def test_builders_return_real_classes_and_tiny_models(tiny_vlm):
    family, model, processor = tiny_vlm
    processor_class, video_processor_class = PROCESSOR_CLASSES[family]
    assert type(processor) is processor_class
    assert type(processor.video_processor) is video_processor_class
    assert type(processor.image_processor) is Qwen2VLImageProcessor
    assert model.config.model_type == family
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 500_000
    assert processor.video_processor.temporal_patch_size == model.config.vision_config.temporal_patch_size == 2
    assert processor.video_processor.patch_size == model.config.vision_config.patch_size
    assert processor.video_processor.merge_size == model.config.vision_config.spatial_merge_size == 2


def test_named_builders_match_dispatcher():
    for builder, family in [
        (build_tiny_qwen2_vl, "qwen2_vl"),
        (build_tiny_qwen2_5_vl, "qwen2_5_vl"),
        (build_tiny_qwen3_vl, "qwen3_vl"),
    ]:
        model, processor = builder(seed=3)
        reference, _ = build_tiny_vlm(family, seed=3)
        assert model.config.model_type == family
        assert _same_weights(model, reference)


@pytest.mark.parametrize("family", TINY_VLM_FAMILIES)
def test_text_head_dim_sets_the_attention_heads_and_the_rope_sections(family):
    """`text_head_dim=32` (vLLM's CPU attention takes 32, 64, 80, ...): 2 heads of 32 at the default width, the M-RoPE
    sections cover half a head in the family's proportions, and the model runs a video prompt; 16 stays the default."""
    model, processor = build_tiny_vlm(family, text_head_dim=32)
    text_config = model.config.text_config
    assert (text_config.num_attention_heads, text_config.num_key_value_heads) == (2, 1)
    rotary = model.model.language_model.rotary_emb
    assert rotary.inv_freq.numel() == 16  # half of a 32-wide head
    sections = text_config.rope_parameters["mrope_section"]
    assert sum(sections) == 16 and sections == ([8, 4, 4] if family == "qwen3_vl" else [4, 6, 6])
    assert build_tiny_vlm(family)[0].config.text_config.rope_parameters["mrope_section"] == (
        [4, 2, 2] if family == "qwen3_vl" else [2, 3, 3]
    )
    text, frames, metadata = _video_inputs(processor)
    inputs = processor(text=[text], videos=[frames], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()
    with pytest.raises(ValueError, match="text_head_dim must be a multiple of 16 that divides text_hidden_size"):
        build_tiny_vlm(family, text_head_dim=48)


def test_unknown_family_is_rejected():
    with pytest.raises(ValueError, match="qwen2_5_vl"):
        build_tiny_vlm("llava")


def test_video_forward_loss_and_generate(tiny_vlm):
    family, model, processor = tiny_vlm
    text, frames, metadata = _video_inputs(processor)
    inputs = processor(
        text=[text], videos=[frames], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt"
    )
    assert "mm_token_type_ids" in inputs
    with torch.no_grad():
        out = model(**inputs, labels=inputs["input_ids"])
    assert out.logits.shape[:2] == inputs["input_ids"].shape
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4
    assert isinstance(processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :])[0], str)


def test_video_frames_reach_the_model_unresized(tiny_vlm):
    """Frames whose sides are multiples of the resize factor are neither resized nor resampled."""
    family, model, processor = tiny_vlm
    text, frames, metadata = _video_inputs(processor, num_frames=6, total=30, fps=10.0, size=(2, 3))
    kwargs = {"video_metadata": [metadata], "do_sample_frames": False, "return_tensors": "pt"}
    inputs = processor(text=[text], videos=[frames], **kwargs)
    patch = processor.video_processor.patch_size
    assert inputs["video_grid_thw"].tolist() == [[3, frames.shape[1] // patch, frames.shape[2] // patch]]
    unresized = processor(text=[text], videos=[frames], do_resize=False, **kwargs)
    assert torch.equal(inputs["pixel_values_videos"], unresized["pixel_values_videos"])
    n_video_tokens = int((inputs["input_ids"] == model.config.video_token_id).sum())
    assert n_video_tokens == inputs["video_grid_thw"].prod().item() // 4


def test_image_forward(tiny_vlm):
    family, model, processor = tiny_vlm
    factor = _factor(processor)
    text = processor.apply_chat_template(IMAGE_PROMPT, tokenize=False, add_generation_prompt=True)
    image = encode_frame_index(7, 2 * factor, 4 * factor)
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == [[1, 2 * factor // (factor // 2), 4 * factor // (factor // 2)]]
    with torch.no_grad():
        out = model(**inputs, labels=inputs["input_ids"])
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)


def test_text_only_forward_and_batch(tiny_vlm):
    family, model, processor = tiny_vlm
    inputs = processor(text=["hello world", "a longer piece of text"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, labels=inputs["input_ids"])
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)


def test_video_batch_of_two_lengths(tiny_vlm):
    family, model, processor = tiny_vlm
    text, frames, metadata = _video_inputs(processor, num_frames=6, total=12)
    _, short_frames, short_metadata = _video_inputs(processor, num_frames=4, total=8)
    inputs = processor(
        text=[text, text],
        videos=[frames, short_frames],
        video_metadata=[metadata, short_metadata],
        do_sample_frames=False,
        padding=True,
        return_tensors="pt",
    )
    assert inputs["video_grid_thw"][:, 0].tolist() == [3, 2]
    with torch.no_grad():
        out = model(**inputs)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize(
    ("num_frames", "total", "fps"),
    [(4, 8, 4.0), (8, 80, 10.0), (16, 300, 29.97), (6, 6, 2.0)],
)
def test_qwen2_5_vl_second_per_grid_ts_follows_metadata(num_frames, total, fps):
    _, processor = build_tiny_qwen2_5_vl()
    text, frames, metadata = _video_inputs(processor, num_frames=num_frames, total=total, fps=fps, size=(2, 2))
    inputs = processor(
        text=[text], videos=[frames], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt"
    )
    sampled_fps = num_frames / total * fps
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx([2 / sampled_fps])
    # `fps=` is the processor's own sampling rate: ignored when frames are already sampled.
    with_fps = processor(
        text=[text], videos=[frames], video_metadata=[metadata], do_sample_frames=False, fps=1.0, return_tensors="pt"
    )
    assert with_fps["second_per_grid_ts"].tolist() == pytest.approx([2 / sampled_fps])


def test_qwen2_5_vl_without_metadata_falls_back_to_24_fps():
    """Why frames must travel with their metadata: without it the processor assumes 24 fps."""
    _, processor = build_tiny_qwen2_5_vl()
    text, frames, _ = _video_inputs(processor, num_frames=4, total=8, fps=4.0)
    inputs = processor(text=[text], videos=[frames], do_sample_frames=False, return_tensors="pt")
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx([2 / 24])


def test_qwen3_vl_timestamps_follow_metadata():
    _, processor = build_tiny_qwen3_vl()
    text, frames, metadata = _video_inputs(processor, num_frames=8, total=80, fps=10.0, size=(2, 2))
    inputs = processor(
        text=[text], videos=[frames], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt"
    )
    rendered = processor.tokenizer.decode(inputs["input_ids"][0])
    # Frames 0, 10, ..., 70 at 10 fps; each temporal patch of 2 frames is stamped with its mean time.
    stamps = [part.split(" seconds>")[0] for part in rendered.split("<")[1:] if " seconds>" in part]
    assert stamps == ["0.5", "2.5", "4.5", "6.5"]
    assert inputs["video_grid_thw"][0, 0].item() == 4


def test_qwen3_vl_resamples_unless_told_frames_are_sampled():
    """Qwen3-VL's video processor samples by default: pre-sampled frames need `do_sample_frames=False`."""
    _, processor = build_tiny_qwen3_vl()
    text, frames, metadata = _video_inputs(processor, num_frames=8, total=80, fps=10.0, size=(2, 2))
    with pytest.raises(IndexError):
        processor(text=[text], videos=[frames], video_metadata=[metadata], return_tensors="pt")


def test_same_seed_same_weights_and_global_rng_untouched():
    state = torch.get_rng_state()
    a, _ = build_tiny_vlm("qwen2_5_vl", seed=0)
    b, _ = build_tiny_vlm("qwen2_5_vl", seed=0)
    c, _ = build_tiny_vlm("qwen2_5_vl", seed=1)
    assert torch.equal(state, torch.get_rng_state())
    assert _same_weights(a, b)
    assert not _same_weights(a, c)


@pytest.mark.parametrize("family", TINY_VLM_FAMILIES)
def test_save_and_reload_offline(family, tmp_path):
    path = save_tiny_vlm(family, tmp_path / family, seed=5)
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    reference, reference_processor = build_tiny_vlm(family, seed=5)
    assert type(model) is type(reference)
    assert type(processor) is type(reference_processor)
    assert type(processor.video_processor) is type(reference_processor.video_processor)
    assert _same_weights(model, reference)
    text, frames, metadata = _video_inputs(processor)
    kwargs = {"videos": [frames], "video_metadata": [metadata], "do_sample_frames": False, "return_tensors": "pt"}
    reloaded = processor(text=[text], **kwargs)
    original = reference_processor(text=[text], **kwargs)
    assert torch.equal(reloaded["input_ids"], original["input_ids"])
    assert torch.equal(reloaded["pixel_values_videos"], original["pixel_values_videos"])
    assert model.generation_config.eos_token_id == reference.generation_config.eos_token_id


# ---------------------------------------------------------------------------------------------------------------
# SigLIP
# ---------------------------------------------------------------------------------------------------------------


def test_tiny_siglip_features_are_finite(tmp_path):
    model, processor = build_tiny_siglip()
    assert isinstance(model, SiglipModel) and isinstance(processor, SiglipProcessor)
    assert isinstance(processor.image_processor, SiglipImageProcessor)
    assert sum(p.numel() for p in model.parameters()) < 500_000
    texts = ["a person opens a door", "A very long sentence. " * 20]
    text_inputs = processor(text=texts, padding="max_length", truncation=True, return_tensors="pt")
    assert text_inputs["input_ids"].shape == (2, 64)
    image_inputs = processor(images=[encode_frame_index(1, 56, 80)], return_tensors="pt")
    assert image_inputs["pixel_values"].shape == (1, 3, 32, 32)
    with torch.no_grad():
        text_embeds = model.get_text_features(**text_inputs).pooler_output
        image_embeds = model.get_image_features(**image_inputs).pooler_output
    assert text_embeds.shape == (2, 32) and image_embeds.shape == (1, 32)
    assert torch.isfinite(text_embeds).all() and torch.isfinite(image_embeds).all()

    path = save_tiny_siglip(tmp_path / "siglip")
    reloaded, reloaded_processor = AutoModel.from_pretrained(path), AutoProcessor.from_pretrained(path)
    assert isinstance(reloaded, SiglipModel) and isinstance(reloaded_processor, SiglipProcessor)
    again = reloaded_processor(text=texts, padding="max_length", truncation=True, return_tensors="pt")
    assert torch.equal(again["input_ids"], text_inputs["input_ids"])
    with torch.no_grad():
        assert torch.equal(reloaded.get_text_features(**again).pooler_output, text_embeds)


# ---------------------------------------------------------------------------------------------------------------
# Frames and files
# ---------------------------------------------------------------------------------------------------------------


def _decode_all(path):
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


@pytest.mark.parametrize("index", [0, 1, 5, 1000, MAX_FRAME_INDEX])
def test_frame_index_survives_resizing(index):
    frame = encode_frame_index(index, 84, 112)
    assert decode_frame_index(frame) == index
    for width, height in [(28, 28), (224, 56), (9, 13), (448, 336)]:
        resized = np.asarray(Image.fromarray(frame).resize((width, height), Image.BICUBIC))
        assert decode_frame_index(resized) == index
    assert decode_frame_index(frame.astype(np.float32) / 255.0) == index


def test_decode_frame_index_rejects_rotated_mirrored_and_bgr_frames():
    frame = encode_frame_index(6, 64, 96)
    rotated = [np.rot90(frame, k) for k in (1, 2, 3)]
    for bad in [*rotated, frame[:, ::-1], frame[::-1], frame[..., ::-1]]:
        with pytest.raises(ValueError, match="upright"):
            decode_frame_index(bad)
    with pytest.raises(ValueError):
        decode_frame_index(np.zeros((64, 64, 3), dtype=np.uint8))
    with pytest.raises(ValueError):
        encode_frame_index(MAX_FRAME_INDEX + 1, 64, 64)


def test_make_index_frames():
    frames = make_index_frames(5, 56, 84, start=10, step=3)
    assert frames.shape == (5, 56, 84, 3) and frames.dtype == np.uint8
    assert [decode_frame_index(f) for f in frames] == [10, 13, 16, 19, 22]


def test_written_video_frames_carry_their_index(tmp_path):
    path = write_test_video(tmp_path / "clip.mp4", num_frames=24, fps=8.0, width=112, height=84)
    frames = _decode_all(path)
    assert [decode_frame_index(f.to_ndarray(format="rgb24")) for f in frames] == list(range(24))
    assert [float(f.time) for f in frames] == pytest.approx([i / 8 for i in range(24)])
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.format.name == "yuv420p"
        assert (stream.width, stream.height) == (112, 84)
        assert stream.average_rate == 8
        assert stream.frames == 24


def test_written_video_is_deterministic(tmp_path):
    a = write_test_video(tmp_path / "a.mp4", num_frames=12, fps=6.0, width=64, height=48, pattern="noise")
    b = write_test_video(tmp_path / "b.mp4", num_frames=12, fps=6.0, width=64, height=48, pattern="noise")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    assert [decode_frame_index(f.to_ndarray(format="rgb24")) for f in _decode_all(a)] == list(range(12))


def test_footage_video_carries_its_index_and_is_deterministic(tmp_path):
    kwargs = dict(num_frames=24, fps=8.0, width=160, height=96, gop=12, pattern="footage")
    a = write_test_video(tmp_path / "a.mp4", **kwargs)
    b = write_test_video(tmp_path / "b.mp4", **kwargs)
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    frames = [f.to_ndarray(format="rgb24") for f in _decode_all(a)]
    assert [decode_frame_index(f) for f in frames] == list(range(24))
    # Not solid blocks: the red marker cell (never changes in the index pattern) is textured, and the texture moves.
    marker = [f[6:18, 10:30].astype(np.int16) for f in frames]
    assert marker[0].std(axis=(0, 1)).min() > 3
    assert np.abs(marker[1] - marker[0]).mean() > 2
    plain = write_test_video(tmp_path / "plain.mp4", **{**kwargs, "pattern": "index"})
    assert a.stat().st_size > 3 * plain.stat().st_size


def test_gop_places_keyframes(tmp_path):
    path = write_test_video(tmp_path / "gop.mp4", num_frames=32, fps=8.0, width=64, height=64, gop=8)
    frames = _decode_all(path)
    keyframes = [decode_frame_index(f.to_ndarray(format="rgb24")) for f in frames if f.key_frame]
    assert keyframes == [0, 8, 16, 24]


@pytest.mark.parametrize(("rotation", "read_back"), [(90, 90), (180, -180), (270, -90), (-90, -90)])
def test_rotation_is_written_as_display_matrix(tmp_path, rotation, read_back):
    path = write_test_video(tmp_path / "rot.mp4", num_frames=4, fps=4.0, width=96, height=64, rotation=rotation)
    frames = _decode_all(path)
    for i, frame in enumerate(frames):
        assert frame.rotation == read_back
        stored = frame.to_ndarray(format="rgb24")
        assert stored.shape[:2] == ((64, 96) if rotation % 180 == 0 else (96, 64))
        with pytest.raises(ValueError):
            decode_frame_index(stored)
        upright = np.rot90(stored, k=frame.rotation // 90)
        assert upright.shape[:2] == (64, 96)
        assert decode_frame_index(upright) == i


def test_unrotated_video_reports_no_rotation(tmp_path):
    frames = _decode_all(write_test_video(tmp_path / "plain.mp4", num_frames=2, width=64, height=64))
    assert all(f.rotation == 0 for f in frames)


def test_other_codec_and_container(tmp_path):
    path = write_test_video(tmp_path / "clip.mkv", num_frames=6, fps=29.97, width=64, height=64, codec="mpeg4")
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
    assert [decode_frame_index(f.to_ndarray(format="rgb24")) for f in _decode_all(path)] == list(range(6))


def test_write_test_video_validates_arguments(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_test_video(tmp_path / "odd.mp4", width=63, height=64)
    with pytest.raises(ValueError, match="multiple of 90"):
        write_test_video(tmp_path / "rot.mp4", rotation=45)
    with pytest.raises(ValueError, match="pattern"):
        write_test_video(tmp_path / "p.mp4", pattern="stripes")


def test_write_test_image(tmp_path):
    solid = write_test_image(tmp_path / "red.png", width=40, height=30, color=(10, 200, 30))
    array = np.asarray(Image.open(solid))
    assert array.shape == (30, 40, 3) and (array == [10, 200, 30]).all()
    indexed = write_test_image(tmp_path / "sub" / "seven.jpg", width=64, height=48, index=7)
    assert decode_frame_index(np.asarray(Image.open(indexed).convert("RGB"))) == 7


def test_broken_files_fail_to_decode(tmp_path):
    good = write_test_video(tmp_path / "good.mp4", num_frames=20, width=64, height=64)
    truncated = write_truncated_video(good, tmp_path / "truncated.mp4", keep_fraction=0.5)
    assert truncated.stat().st_size == good.stat().st_size // 2
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(truncated))

    faststart = write_test_video(tmp_path / "fast.mp4", num_frames=20, width=64, height=64, faststart=True)
    cut = write_truncated_video(faststart, tmp_path / "cut.mp4", keep_fraction=0.6)
    with av.open(str(cut)) as container:  # the index survives, the media data breaks off
        assert container.streams.video[0].frames == 20
        with pytest.raises(av.error.FFmpegError):
            for _ in container.decode(video=0):
                pass

    for content in ["this is not a video\n", ""]:
        not_video = write_non_video_file(tmp_path / "not_video.mp4", content)
        with pytest.raises(av.error.InvalidDataError):
            av.open(str(not_video))
    with pytest.raises(ValueError):
        write_truncated_video(good, tmp_path / "x.mp4", keep_fraction=1.0)
