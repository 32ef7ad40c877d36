import os

import numpy as np
import pytest

from videorft_hf.testing import decode_frame_index, write_test_video
from videorft_hf.video import (
    AspectRatioError,
    CorruptVideoError,
    EmptyVideoError,
    FrameCache,
    ImageDecodeError,
    NotAVideoError,
    VideoDecodeError,
    VideoNotFoundError,
    VideoSamplingConfig,
    load_image,
    load_video_frames,
    planner,
)


def _torchcodec_works() -> bool:
    try:
        import torchcodec.decoders  # noqa: F401  (needs a system FFmpeg as well as the wheel)
    except Exception:
        return False
    return True


# torchcodec is an optional backend (it needs a system FFmpeg); its cases run wherever it imports.
BACKENDS = ["pyav", "decord"] + (["torchcodec"] if _torchcodec_works() else [])

TRAIN = VideoSamplingConfig.from_preset("videorft-train")
EVAL = VideoSamplingConfig.from_preset("videorft-eval")
R1 = VideoSamplingConfig.from_preset("video-r1-train")
BUDGET = VideoSamplingConfig(min_frames=4, max_frames=16, min_pixels=4 * 784, max_pixels=768 * 784, total_pixels=16 * 784 * 8)

# (name, video spec (frames, fps, width, height), config, expected indices, expected (height, width)),
# expected values worked out by hand from REFERENCE section 4.
CASES = [
    ("train-60s", (1800, 30, 640, 360), TRAIN, [round(i * 1799 / 15 + 1e-9) for i in range(16)], (224, 420)),
    ("train-shorter-than-min", (6, 30, 64, 48), TRAIN, [0, 1, 2, 3, 4, 5], None),
    ("train-odd-count", (5, 30, 64, 48), TRAIN, [0, 1, 3, 4], None),
    ("r1-3s", (30, 10, 96, 64), R1, [0, 6, 12, 17, 23, 29], None),
    ("eval-odd-size", (160, 8, 150, 86), EVAL, None, (252, 420)),
    ("default-long", (600, 10, 320, 180), VideoSamplingConfig(), None, (252, 448)),
    ("total-pixel-budget", (64, 8, 640, 360), BUDGET, None, (84, 140)),
]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    paths = {}
    for name, (frames, fps, width, height), *_ in CASES:
        paths[name] = str(root / f"{name}.mp4")
        write_test_video(paths[name], num_frames=frames, fps=fps, width=width, height=height)
    return paths


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_frame_indices_and_sizes(videos, case, backend):
    name, (total, fps, width, height), config, expected_indices, expected_size = case
    frames, metadata = load_video_frames(videos[name], config, backend=backend)
    n = len(metadata.frames_indices)
    assert n % 2 == 0 and frames.shape[0] == n
    if expected_indices is not None:
        assert metadata.frames_indices == expected_indices
    else:
        assert n == config.num_frames(total, fps)
    if expected_size is not None:
        assert frames.shape[1:3] == expected_size
    assert frames.dtype == np.uint8 and frames.shape[3] == 3
    assert frames.shape[1] % 28 == 0 and frames.shape[2] % 28 == 0
    assert metadata.fps == pytest.approx(fps)
    assert metadata.total_num_frames == total
    assert (metadata.width, metadata.height) == (width, height)
    assert metadata.duration == pytest.approx(total / fps)
    # the frames really are the sampled ones (each frame encodes its own index)
    assert [decode_frame_index(f) for f in frames] == metadata.frames_indices


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_qwen_vl_utils_reference(videos, case, monkeypatch):
    """The release's path (qwen-vl-utils fetch_video with decord) picks the same frames and sizes."""
    vision_process = pytest.importorskip("qwen_vl_utils.vision_process")
    monkeypatch.setattr(vision_process, "get_video_reader_backend", lambda: "decord")
    name, _, config, *_ = case
    element = {
        "video": videos[name],
        "fps": config.fps,
        "min_frames": config.min_frames,
        "max_frames": config.max_frames,
        "min_pixels": config.min_pixels,
        "max_pixels": config.max_pixels,
        "total_pixels": config.total_pixels,
    }
    reference, reference_meta = vision_process.fetch_video(element, return_video_metadata=True)
    frames, metadata = load_video_frames(videos[name], config, backend="decord")
    assert metadata.frames_indices == list(reference_meta["frames_indices"])
    reference = reference.permute(0, 2, 3, 1).numpy()
    assert frames.shape == reference.shape
    assert np.array_equal(frames, reference.astype(np.uint8))


def test_backends_agree_within_codec_noise(videos):
    a, meta_a = load_video_frames(videos["eval-odd-size"], EVAL, backend="pyav")
    b, meta_b = load_video_frames(videos["eval-odd-size"], EVAL, backend="decord")
    assert meta_a.frames_indices == meta_b.frames_indices
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.mean() < 1.0 and diff.max() <= 8


@pytest.mark.parametrize("overhead, plan", [(10**9, "sequential"), (-(10**9), "seek")])
def test_pyav_seek_and_sequential_paths_decode_the_same_frames(tmp_path, monkeypatch, overhead, plan):
    path = str(tmp_path / "gop.mp4")
    write_test_video(path, num_frames=240, fps=24, width=96, height=64, gop=24)
    expected, _ = load_video_frames(path, TRAIN, backend="decord")
    monkeypatch.setattr(planner, "_SEEK_OVERHEAD_FRAMES", overhead)
    frames, metadata = load_video_frames(path, TRAIN, backend="pyav")
    assert [decode_frame_index(f) for f in frames] == metadata.frames_indices
    assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 8, plan


def test_clip_bounds(videos):
    frames, metadata = load_video_frames(videos["r1-3s"], R1, backend="pyav", start=1.0, end=2.0)
    # frames 10..20 (11 frames, 1.1 s at 10 fps): clamp(2.2, 4, 16) -> 4 frames
    assert metadata.frames_indices == [10, 13, 17, 20]
    assert metadata.total_num_frames == 11
    assert [decode_frame_index(f) for f in frames] == metadata.frames_indices
    with pytest.raises(EmptyVideoError, match="clip"):
        load_video_frames(videos["r1-3s"], R1, start=2.5, end=2.5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rotation", [90, 270, 180])
def test_rotation_metadata_comes_out_upright(tmp_path, backend, rotation):
    # The writer stores the frames turned against the display rotation; a reader that honours the display
    # matrix gets back exactly the upright 112x56 frames of an unrotated file.
    path = str(tmp_path / f"rot{rotation}.mp4")
    write_test_video(path, num_frames=8, fps=8, width=112, height=56, rotation=rotation)
    plain = str(tmp_path / "plain.mp4")
    write_test_video(plain, num_frames=8, fps=8, width=112, height=56)
    frames, metadata = load_video_frames(path, R1, backend=backend)
    upright, _ = load_video_frames(plain, R1, backend=backend)
    assert frames.shape == upright.shape
    assert (metadata.width, metadata.height) == (112, 56)
    assert [decode_frame_index(f) for f in frames] == metadata.frames_indices
    assert np.abs(frames.astype(int) - upright.astype(int)).mean() < 2


def test_second_per_grid_ts_from_real_metadata(videos):
    from videorft_hf.testing import build_tiny_processor

    processor = build_tiny_processor("qwen2_5_vl")
    frames, metadata = load_video_frames(videos["train-60s"], TRAIN)
    text = "<|vision_start|><|video_pad|><|vision_end|>hi"
    out = processor(text=[text], videos=[frames], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt")
    sampled_fps = 16 / 1800 * 30
    assert metadata.sampled_fps == pytest.approx(sampled_fps)
    assert out["second_per_grid_ts"].tolist() == pytest.approx([2 / sampled_fps])


class TestErrors:
    def test_missing_file(self, tmp_path):
        with pytest.raises(VideoNotFoundError, match="missing.mp4: file not found"):
            load_video_frames(tmp_path / "missing.mp4")

    def test_a_directory_is_not_a_video_nor_missing(self, tmp_path):
        (tmp_path / "clips").mkdir()
        with pytest.raises(NotAVideoError, match="clips: is a directory, not a video file") as raised:
            load_video_frames(tmp_path / "clips")
        assert not isinstance(raised.value, FileNotFoundError)
        with pytest.raises(ImageDecodeError, match="clips: is a directory, not an image file"):
            load_image(tmp_path / "clips")

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_not_a_video(self, tmp_path, backend):
        path = tmp_path / "notes.mp4"
        path.write_text("this is not a video\n" * 100)
        with pytest.raises(NotAVideoError, match="notes.mp4"):
            load_video_frames(path, backend=backend)

    def test_image_is_not_a_video(self, tmp_path):
        from PIL import Image

        path = tmp_path / "still.png"
        Image.new("RGB", (64, 64), (10, 20, 30)).save(path)
        with pytest.raises(NotAVideoError, match="still.png: this is an image"):
            load_video_frames(path, backend="pyav")

    def test_single_frame_video(self, tmp_path):
        path = str(tmp_path / "one.mp4")
        write_test_video(path, num_frames=1, fps=8, width=64, height=64)
        with pytest.raises(EmptyVideoError, match="1 frame"):
            load_video_frames(path, backend="pyav")

    def test_truncated_stream(self, tmp_path, videos):
        from videorft_hf.testing import write_truncated_video

        path = str(tmp_path / "truncated.mp4")
        write_truncated_video(videos["default-long"], path, keep_fraction=0.5)
        with pytest.raises(VideoDecodeError, match="truncated.mp4"):
            load_video_frames(path, VideoSamplingConfig(), backend="pyav")

    def test_truncated_stream_with_index_up_front(self, tmp_path):
        from videorft_hf.testing import write_truncated_video

        source = str(tmp_path / "faststart.mp4")
        write_test_video(source, num_frames=64, fps=8, width=64, height=64, faststart=True)
        path = str(tmp_path / "cut.mp4")
        write_truncated_video(source, path, keep_fraction=0.5)
        with pytest.raises(CorruptVideoError, match="cut.mp4: the stream ends after .* of the 64 frames"):
            load_video_frames(path, R1, backend="pyav")

    def test_absurd_aspect_ratio(self, tmp_path):
        path = str(tmp_path / "thin.mp4")
        write_test_video(path, num_frames=4, fps=4, width=1696, height=8)
        with pytest.raises(AspectRatioError, match="aspect ratio 212.0 is above 200"):
            load_video_frames(path, R1, backend="pyav")

    def test_errors_pickle(self):
        import pickle

        error = pickle.loads(pickle.dumps(CorruptVideoError("/x.mp4", "broken")))
        assert isinstance(error, CorruptVideoError) and str(error) == "/x.mp4: broken"

    def test_bad_configs(self):
        with pytest.raises(ValueError, match="min_frames"):
            VideoSamplingConfig(min_frames=20, max_frames=16)
        with pytest.raises(ValueError, match="min_pixels"):
            VideoSamplingConfig(min_pixels=10, max_pixels=5)
        with pytest.raises(ValueError, match="fps"):
            VideoSamplingConfig(fps=0)
        with pytest.raises(ValueError, match="Unknown sampling preset"):
            VideoSamplingConfig.from_preset("nope")


def test_cache_hits_evicts_and_sees_file_changes(tmp_path):
    path = str(tmp_path / "a.mp4")
    write_test_video(path, num_frames=16, fps=8, width=64, height=64)
    height, width = R1.frame_size(64, 64, 4)  # R1 preset: 4 frames, upscaled to the 128*28*28 minimum
    one_video = 4 * height * width * 3
    cache = FrameCache(max_bytes=int(one_video * 1.5))
    first, _ = load_video_frames(path, R1, cache=cache)
    second, _ = load_video_frames(path, R1, cache=cache)
    assert second is first and (cache.hits, cache.misses) == (1, 1)
    assert not first.flags.writeable
    load_video_frames(path, VideoSamplingConfig.from_preset("video-r1-train", fps=1.0), cache=cache)  # evicts the first
    assert len(cache) == 1 and cache.current_bytes <= one_video * 1.5
    write_test_video(path, num_frames=20, fps=8, width=64, height=64)  # same path, new content
    os.utime(path, ns=(1, 1))
    third, meta = load_video_frames(path, R1, cache=cache)
    assert third is not first and meta.total_num_frames == 20


class TestImages:
    def test_resize_rules(self, tmp_path):
        from PIL import Image

        path = tmp_path / "big.jpg"
        Image.new("RGB", (1280, 720), (200, 10, 10)).save(path)
        image = load_image(path)
        assert image.mode == "RGB"
        width, height = image.size
        assert width % 28 == 0 and height % 28 == 0 and width * height <= 256 * 28 * 28
        assert (height, width) == VideoSamplingConfig().image_size(720, 1280)

    def test_tiny_image_is_upscaled_and_rgba_flattened(self, tmp_path):
        from PIL import Image

        path = tmp_path / "tiny.png"
        Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(path)
        image = load_image(path)
        assert image.size == (56, 56)
        assert np.asarray(image).min() == 255  # transparent -> white, as qwen-vl-utils does

    def test_errors(self, tmp_path):
        with pytest.raises(ImageDecodeError, match="nope.png: file not found"):
            load_image(tmp_path / "nope.png")
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"\x89PNG not really")
        with pytest.raises(ImageDecodeError, match="bad.png: not a readable image"):
            load_image(bad)
