"""Frame store: lossless round trip, lossy tolerance, resume, crash safety, fallback on a miss, transparent use by
`load_video_frames`, the collator and the eval/trainer media loader, and `videorft prepare-frames`."""

import json
import os
import pickle

import numpy as np
import pytest

from videorft_hf import video as video_module
from videorft_hf.frame_store import (
    LOSSY_TOLERANCE,
    STORE_ENV,
    FrameStore,
    FrameStoreError,
    prepare_frames,
)
from videorft_hf.testing import decode_frame_index, write_test_video
from videorft_hf.video import (
    FrameCache,
    VideoDecodeError,
    VideoSamplingConfig,
    load_video_frames,
    loading,
    planner,
    pyav_decoder,
)

CONFIG = VideoSamplingConfig(min_frames=4, max_frames=8, min_pixels=56 * 56, max_pixels=112 * 112)
OTHER = VideoSamplingConfig(min_frames=4, max_frames=4, min_pixels=56 * 56, max_pixels=56 * 56)


@pytest.fixture(autouse=True)
def _no_store_in_environment(monkeypatch):
    monkeypatch.delenv(STORE_ENV, raising=False)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return [
        str(write_test_video(root / "a.mp4", num_frames=24, fps=8, width=96, height=64)),
        str(write_test_video(root / "b.mp4", num_frames=40, fps=10, width=112, height=112, pattern="noise", gop=12)),
        str(write_test_video(root / "c.mp4", num_frames=16, fps=4, width=64, height=48, pattern="noise")),
    ]


def fresh(path, config=CONFIG):
    return load_video_frames(path, config)


def refuse_decoding(monkeypatch):
    """Any decode from now on fails: what still loads came from the store."""

    def fail(path, indices_fn):
        raise AssertionError(f"decoded {path}")

    monkeypatch.setattr(loading, "_DECODERS", {name: fail for name in loading._DECODERS})


@pytest.mark.parametrize("mode", ["lossless", "raw"])
def test_lossless_round_trip_equals_fresh_decode(tmp_path, clips, mode):
    summary = prepare_frames(clips, tmp_path / "store", CONFIG, mode=mode, num_workers=0, progress=False)
    assert (summary["stored"], summary["present"], summary["failed"]) == (3, 0, [])
    store = FrameStore(tmp_path / "store")
    assert store.mode == mode and len(store) == 3
    for clip in clips:
        frames, metadata = store.get(clip, CONFIG)
        expected, expected_metadata = fresh(clip)
        assert frames.dtype == np.uint8 and np.array_equal(frames, expected)
        assert metadata == expected_metadata
    assert [decode_frame_index(f) for f in store.get(clips[0], CONFIG)[0]] == metadata_indices(clips[0])


def metadata_indices(path):
    return fresh(path)[1].frames_indices


def test_lossy_mode_is_within_the_stated_tolerance(tmp_path, clips):
    prepare_frames(clips, tmp_path / "store", CONFIG, mode="lossy", num_workers=0, progress=False)
    store = FrameStore(tmp_path / "store")
    raw_bytes = sum(fresh(clip)[0].nbytes for clip in clips)
    shards = tmp_path / "store" / "shards"
    assert sum(os.path.getsize(shards / name) for name in os.listdir(shards)) < raw_bytes / 3
    for clip in clips:
        frames, metadata = store.get(clip, CONFIG)
        expected, expected_metadata = fresh(clip)
        error = np.abs(frames.astype(float) - expected.astype(float))
        psnr = 10 * np.log10(255**2 / max(np.mean(error**2), 1e-12))
        assert error.mean() <= LOSSY_TOLERANCE["mean_abs_error"] and psnr >= LOSSY_TOLERANCE["psnr_db"], (clip, psnr)
        assert metadata == expected_metadata
    with pytest.raises(FrameStoreError, match="lossy"):
        FrameStore(tmp_path / "store", mode="lossless")


def test_resume_skips_stored_videos_and_parallel_workers_agree(tmp_path, clips):
    first = prepare_frames(clips[:2], tmp_path / "store", CONFIG, num_workers=2, progress=False)
    assert first["stored"] == 2
    again = prepare_frames(clips, tmp_path / "store", CONFIG, num_workers=2, progress=False)
    assert (again["stored"], again["present"]) == (1, 2)
    store = FrameStore(tmp_path / "store")
    for clip in clips:
        assert np.array_equal(store.get(clip, CONFIG)[0], fresh(clip)[0])
    # another config is another entry
    assert prepare_frames(clips[:1], store, OTHER, num_workers=0, progress=False)["stored"] == 1
    assert len(store) == 4


def test_interrupted_write_leaves_a_consistent_store(tmp_path, clips):
    store = FrameStore(tmp_path / "store", flush_every=100)
    store.put(clips[0], CONFIG, *fresh(clips[0]))
    store.flush()
    store.put(clips[1], CONFIG, *fresh(clips[1]))  # written to the shard, never committed: the process "dies"
    del store
    shard, = (path.name for path in (tmp_path / "store" / "shards").iterdir())
    with open(tmp_path / "store" / "shards" / shard, "ab") as stream:  # and its last write was torn
        stream.write(b"torn half of a blob")

    reopened = FrameStore(tmp_path / "store")
    assert len(reopened) == 1 and reopened.get(clips[1], CONFIG) is None
    assert np.array_equal(reopened.get(clips[0], CONFIG)[0], fresh(clips[0])[0])
    summary = prepare_frames(clips, reopened, CONFIG, num_workers=0, progress=False)
    assert (summary["stored"], summary["present"]) == (2, 1)
    assert np.array_equal(reopened.get(clips[1], CONFIG)[0], fresh(clips[1])[0])
    assert os.path.getsize(tmp_path / "store" / "shards" / shard) > 0


def test_corrupt_blob_is_a_miss_and_decoding_takes_over(tmp_path, clips, caplog):
    store = FrameStore(tmp_path / "store", mode="raw")
    store.put(clips[0], CONFIG, *fresh(clips[0]))
    store.close()
    shard = os.path.join(tmp_path, "store", "shards", os.listdir(tmp_path / "store" / "shards")[0])
    with open(shard, "r+b") as stream:
        stream.seek(100)
        stream.write(b"\xff" * 16)
    store = FrameStore(tmp_path / "store")
    frames, _ = load_video_frames(clips[0], CONFIG, store=store)
    assert np.array_equal(frames, fresh(clips[0])[0])
    assert store.misses == 1 and store.hits == 0 and "checksum" in caplog.text


def test_miss_falls_back_to_decoding(tmp_path, clips):
    store = FrameStore(tmp_path / "store")
    store.put(clips[0], CONFIG, *fresh(clips[0]))
    store.flush()
    frames, metadata = load_video_frames(clips[0], OTHER, store=store)  # another sampling config
    assert np.array_equal(frames, fresh(clips[0], OTHER)[0]) and store.misses == 1
    load_video_frames(clips[1], CONFIG, store=store)  # a video never prepared
    assert store.misses == 2 and store.hits == 0
    load_video_frames(clips[0], CONFIG, store=store, start=0.5)  # other clip bounds
    assert store.misses == 3


def test_replaced_file_is_never_served_stale(tmp_path):
    path = tmp_path / "clip.mp4"
    write_test_video(path, num_frames=24, fps=8, width=64, height=64)
    store = FrameStore(tmp_path / "store")
    store.put(path, CONFIG, *fresh(path))
    store.flush()
    write_test_video(path, num_frames=48, fps=8, width=64, height=64)  # same name, new content
    frames, metadata = load_video_frames(path, CONFIG, store=store)
    assert metadata.total_num_frames == 48 and store.misses == 1


def test_load_video_frames_reads_only_the_store_it_is_given(tmp_path, clips, monkeypatch):
    prepare_frames(clips, tmp_path / "store", CONFIG, num_workers=0, progress=False)
    expected = {clip: fresh(clip) for clip in clips}
    refuse_decoding(monkeypatch)
    monkeypatch.setenv(STORE_ENV, str(tmp_path / "store"))  # the environment is the commands' default, never read here
    with pytest.raises(AssertionError, match="decoded"):
        load_video_frames(clips[0], CONFIG)
    store = FrameStore(tmp_path / "store", create=False)
    frames, metadata = load_video_frames(clips[0], CONFIG, store=store)
    assert np.array_equal(frames, expected[clips[0]][0]) and metadata == expected[clips[0]][1] and store.hits == 1
    cache = FrameCache()
    frames, _ = load_video_frames(clips[1], CONFIG, cache=cache, store=store)
    assert np.array_equal(frames, expected[clips[1]][0]) and store.hits == 2
    assert load_video_frames(clips[1], CONFIG, cache=cache, store=store)[0] is frames and store.hits == 2  # cache first


def test_two_stores_in_one_process_do_not_affect_each_other(tmp_path, clips):
    """A lossy store changes the pixels of its own reader only: another store, and no store, keep theirs."""
    lossless = FrameStore(tmp_path / "lossless", mode="lossless")
    lossy = FrameStore(tmp_path / "lossy", mode="lossy")
    decoded = fresh(clips[1])
    for store in (lossless, lossy):
        store.put(clips[1], CONFIG, *decoded)
        store.flush()
    from_lossy = load_video_frames(clips[1], CONFIG, store=lossy)[0]
    assert not np.array_equal(from_lossy, decoded[0])  # noise frames: JPEG changes them
    for _ in range(2):  # interleaved, in either order
        assert np.array_equal(load_video_frames(clips[1], CONFIG, store=lossless)[0], decoded[0])
        assert np.array_equal(load_video_frames(clips[1], CONFIG)[0], decoded[0])
        assert np.array_equal(load_video_frames(clips[1], CONFIG, store=lossy)[0], from_lossy)
    assert (lossless.hits, lossy.hits) == (2, 3)


def test_transparent_use_by_collator_and_media_loader(tmp_path, clips, monkeypatch):
    from videorft_hf import DataCollatorForVideoLanguageModeling, make_conversation
    from videorft_hf.configs import VideoSFTConfig
    from videorft_hf.processing import load_row_media
    from videorft_hf.testing import build_tiny_processor

    config = VideoSamplingConfig(min_frames=4, max_frames=4, min_pixels=3136, max_pixels=3136)
    prepare_frames(clips, tmp_path / "store", config, num_workers=0, progress=False)
    record = {
        "problem_id": 1, "problem": "What happens?", "data_type": "video", "problem_type": "free-form",
        "process": "<think>It moves.</think>", "solution": "<answer>it moves</answer>", "path": "./a.mp4",
        "data_source": "test",
    }
    row = make_conversation(record, media_root=os.path.dirname(clips[0]))
    processor = build_tiny_processor("qwen2_5_vl")
    args = VideoSFTConfig(
        output_dir=str(tmp_path / "out"), report_to=[], bf16=False, use_cpu=True, frame_store=str(tmp_path / "store"), video_min_frames=4,
        video_max_frames=4, video_min_pixels=3136, video_max_pixels=3136,
    )
    refuse_decoding(monkeypatch)
    collator = DataCollatorForVideoLanguageModeling.from_config(processor, args)
    assert collator.frame_store.path == str(tmp_path / "store")
    batch = collator([row])
    assert batch["pixel_values_videos"].shape[0] > 0 and collator.frame_store.hits == 1
    with pytest.raises(AssertionError, match="decoded"):  # a collator without a store decodes
        DataCollatorForVideoLanguageModeling(processor, sampling_config=config)([row])
    store = args.open_frame_store()
    media = load_row_media(row, config, store=store)  # the loader of `videorft eval` and the trainer's processing path
    assert np.array_equal(media.videos[0][0], FrameStore(tmp_path / "store").get(clips[0], config)[0])
    assert store.hits == 1


def test_frame_store_field_and_environment_default(tmp_path, monkeypatch):
    from videorft_hf.configs import VideoSFTConfig
    from videorft_hf.scripts.eval import make_parser

    FrameStore(tmp_path / "env-store")
    FrameStore(tmp_path / "flag-store")
    (args,) = make_parser().parse_args_and_config(["--benchmarks", "b.json"])
    assert args.frame_store is None and args.open_frame_store() is None
    monkeypatch.setenv(STORE_ENV, str(tmp_path / "env-store"))
    (args,) = make_parser().parse_args_and_config(["--benchmarks", "b.json"])
    assert args.frame_store == str(tmp_path / "env-store")
    (args,) = make_parser().parse_args_and_config(["--benchmarks", "b.json", "--frame_store", str(tmp_path / "flag-store")])
    assert args.open_frame_store().path == str(tmp_path / "flag-store")
    with pytest.raises(FrameStoreError, match="frame_store=.*nowhere.*not a frame store"):  # before anything loads
        VideoSFTConfig(output_dir=str(tmp_path / "out"), report_to=[], bf16=False, use_cpu=True, frame_store=str(tmp_path / "nowhere"))


def test_store_pickles_for_dataloader_workers(tmp_path, clips):
    store = FrameStore(tmp_path / "store")
    store.put(clips[0], CONFIG, *fresh(clips[0]))
    store.flush()
    clone = pickle.loads(pickle.dumps(store))
    assert np.array_equal(clone.get(clips[0], CONFIG)[0], fresh(clips[0])[0])


def test_configuration_errors(tmp_path):
    with pytest.raises(FrameStoreError, match="not a frame store"):
        FrameStore(tmp_path / "nowhere", create=False)
    with pytest.raises(ValueError, match="mode"):
        FrameStore(tmp_path / "bad", mode="webp")


def test_failed_videos_are_reported_not_stored(tmp_path, clips):
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    summary = prepare_frames([clips[0], str(broken), str(tmp_path / "missing.mp4")], tmp_path / "store", CONFIG,
                             num_workers=0, progress=False)
    assert summary["stored"] == 1
    assert sorted(os.path.basename(f["path"]) for f in summary["failed"]) == ["broken.mp4", "missing.mp4"]
    with pytest.raises(VideoDecodeError):
        load_video_frames(str(broken), CONFIG, store=FrameStore(tmp_path / "store"))


def test_prepare_frames_command(tmp_path, clips, capsys):
    from videorft_hf.cli import main

    records = tmp_path / "data.jsonl"
    rows = [
        {"problem_id": i, "problem": "What?", "data_type": "video", "problem_type": "free-form",
         "solution": "<answer>x</answer>", "path": f"./{os.path.basename(clip)}", "data_source": "test"}
        for i, clip in enumerate(clips[:2] * 2)  # each video asked twice: stored once
    ]
    records.write_text("".join(json.dumps(row) + "\n" for row in rows))
    argv = ["prepare-frames", "--dataset_name", str(records), "--media_root", os.path.dirname(clips[0]),
            "--store", str(tmp_path / "store"), "--video_sampling_preset", "video-r1-train", "--video_min_pixels",
            "3136", "--video_max_pixels", "3136", "--num_workers", "0", "--mode", "lossy"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.split("\nUse it")[0])
    assert (summary["videos"], summary["stored"], summary["mode"]) == (2, 2, "lossy")
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out.split("\nUse it")[0])["present"] == 2


def test_fast_pyav_path_matches_a_full_decode(tmp_path, monkeypatch):
    """What the store is prepared with: PyAV's planned decode (seeks per keyframe group spread over threads, and
    disposable pictures that are not sampled never decoded) gives exactly the frames of a full sequential decode.
    (A test of `videorft_hf.video`, kept next to the store whose lossless promise depends on it.)"""
    import av

    path = str(write_test_video(tmp_path / "gop.mp4", num_frames=120, fps=24, width=128, height=96, pattern="noise",
                                gop=12))
    with av.open(path) as container:
        stream = container.streams.video[0]
        length_size = pyav_decoder._h264_nal_length_size(stream)
        disposable = sum(pyav_decoder._is_disposable_h264(p, length_size) for p in container.demux(stream) if p.size)
    with av.open(path) as container:
        everything = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert disposable > 10  # the clip exercises the skipping
    config = VideoSamplingConfig(min_frames=4, max_frames=16, min_pixels=96 * 128, max_pixels=96 * 128)
    pools = []

    class CountingPool(pyav_decoder.ThreadPoolExecutor):
        def __init__(self, workers):
            pools.append(workers)
            super().__init__(workers)

    monkeypatch.setattr(planner, "_DECODE_THREADS", 2)
    monkeypatch.setattr(pyav_decoder, "ThreadPoolExecutor", CountingPool)
    frames, metadata = load_video_frames(path, config, backend="pyav")
    assert len(metadata.frames_indices) == 10 and pools == [2]  # keyframe groups decoded by two threads
    expected = np.stack([everything[i] for i in metadata.frames_indices])
    assert np.array_equal(frames, video_module.resize_frames(expected, *frames.shape[1:3]))


def test_video_does_not_depend_on_the_frame_store():
    """`frame_store` builds on `video`, never the reverse (no import, not even a deferred one)."""
    import ast
    from pathlib import Path

    modules = sorted(Path(video_module.__file__).parent.glob("*.py"))  # every module of the package
    assert len(modules) > 1
    for path in modules:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert not any("frame_store" in (name or "") for name in imported), (path.name, imported)
