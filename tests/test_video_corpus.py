"""Real-world video oddities (tests/video_corpus.py) on every installed backend: each file decodes to the sampled
indices with the right frames, the same on every backend, or raises the precise typed error; never a wrong frame."""

import av
import pytest
from test_video import BACKENDS
from video_corpus import CORPUS

from videorft_hf.testing import decode_frame_index
from videorft_hf.video import UnsupportedVideoError, VideoSamplingConfig, load_video_frames, planner

# Every frame (fps far above the videos'), and 8 frames (seeks and skipped frames in the PyAV planner).
SMALL = dict(min_pixels=28 * 28, max_pixels=112 * 112)
CONFIGS = {
    "all-frames": VideoSamplingConfig(fps=1000.0, min_frames=2, max_frames=768, **SMALL),
    "8-frames": VideoSamplingConfig(min_frames=8, max_frames=8, **SMALL),
}
# What decord (0.6, the last release) cannot decode right; the default backend, PyAV, decodes every file.
UNSUPPORTED = {
    "decord": {
        "open_gop.mp4": "decord would return wrong frames for an open-GOP stream",
        "open_gop.mkv": "decord would return wrong frames for an open-GOP stream",
        "resolution_change.ts": "decord would return wrong frames for an MPEG-TS file",
        "av1.mp4": "decord cannot decode this av1 video",
    }
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    paths = {}
    for name, (write, _, encoder) in CORPUS.items():
        if encoder in av.codecs_available:  # PyAV's wheels ship all of them; a system build may lack one
            write(root / name)
            paths[name] = str(root / name)
    return paths


def _path(corpus, name):
    if name not in corpus:
        pytest.skip(f"PyAV's FFmpeg here has no {CORPUS[name][2]} encoder to write {name}")
    return corpus[name]


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CORPUS))
def test_every_file_decodes_right_or_raises_the_typed_error(corpus, name, backend, config):
    path = _path(corpus, name)
    sampling = CONFIGS[config]
    expected_error = UNSUPPORTED.get(backend, {}).get(name)
    if expected_error is not None:
        with pytest.raises(UnsupportedVideoError, match=f"^{path}: {expected_error}") as info:
            load_video_frames(path, sampling, backend=backend)
        assert str(info.value).endswith("Decode it with backend='pyav' (the default).")
        return
    frames, metadata = load_video_frames(path, sampling, backend=backend)
    total = CORPUS[name][1]
    assert metadata.total_num_frames == total
    indices = sampling.frame_indices(total, metadata.fps)
    if config == "all-frames":
        assert indices == list(range(total))
    assert metadata.frames_indices == indices
    assert [decode_frame_index(frame) for frame in frames] == indices
    upright = (64, 96) if name.startswith("rotated") else (96, 64)  # (width, height) before resizing
    assert (metadata.width, metadata.height) == upright


@pytest.mark.parametrize("name", list(CORPUS))
def test_backends_sample_the_same_indices(corpus, name):
    path = _path(corpus, name)
    sampling = CONFIGS["8-frames"]
    results = {}
    for backend in BACKENDS:
        if name not in UNSUPPORTED.get(backend, {}):
            _, metadata = load_video_frames(path, sampling, backend=backend)
            results[backend] = (tuple(metadata.frames_indices), round(metadata.fps, 3), metadata.total_num_frames)
    assert "pyav" in results and len(set(results.values())) == 1, results


@pytest.mark.parametrize("plan_overhead", [10**9, -(10**9)], ids=["sequential", "seek"])
@pytest.mark.parametrize("name", list(CORPUS))
def test_pyav_seek_and_sequential_plans_decode_every_file(corpus, name, plan_overhead, monkeypatch):
    path = _path(corpus, name)
    monkeypatch.setattr(planner, "_SEEK_OVERHEAD_FRAMES", plan_overhead)
    frames, metadata = load_video_frames(path, CONFIGS["8-frames"], backend="pyav")
    assert [decode_frame_index(frame) for frame in frames] == metadata.frames_indices
