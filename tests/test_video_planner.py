"""The PyAV decode planner (`video.plan_pyav_decode`): which frames are decoded, with or without seeks, over how many
threads, and which packets are never decoded, for layouts of keyframes and sampled indices, without a video file."""

import pytest

from videorft_hf.video import DecodePlan, PacketIndex, plan_pyav_decode, planner


def gop(frames: int, every: int, **kwargs) -> PacketIndex:
    """A stream of `frames` frames (timestamps 0, 1, ...) with a keyframe every `every` frames."""
    return PacketIndex(pts=list(range(frames)), keyframe_pts=list(range(0, frames, every)), **kwargs)


def test_sparse_samples_of_a_long_gop_stream_seek_once_per_group():
    plan = plan_pyav_decode(gop(240, 24), [130, 10, 230], seek_overhead=2, threads=1)
    # groups from keyframes 0, 120 and 216: 11 + 11 + 15 frames plus three seeks, against 231 frames in one pass
    assert plan == DecodePlan(targets=(10, 130, 230), seek_threads=(((0, (10,)), (120, (130,)), (216, (230,))),))
    assert plan.seeks


def test_dense_samples_decode_in_one_pass():
    plan = plan_pyav_decode(gop(240, 24), list(range(0, 240, 2)), seek_overhead=2, threads=2)
    assert plan.targets == tuple(range(0, 240, 2)) and not plan.seeks  # ten seeks would decode 250 frames, not 239


def test_a_single_group_decodes_from_the_start():
    assert not plan_pyav_decode(gop(240, 24), [200, 210], seek_overhead=2, threads=2).seeks
    assert not plan_pyav_decode(gop(240, 240), [10, 100, 230], seek_overhead=2, threads=2).seeks  # one keyframe


def test_an_all_intra_stream_seeks_to_every_sample():
    plan = plan_pyav_decode(gop(100, 1), [0, 50, 99], seek_overhead=2, threads=1)
    assert plan.seek_threads == (((0, (0,)), (50, (50,)), (99, (99,))),)


def test_targets_before_the_first_keyframe_belong_to_frame_zero():
    packets = PacketIndex(pts=list(range(100)), keyframe_pts=[20, 60])
    plan = plan_pyav_decode(packets, [5, 70], seek_overhead=0, threads=1)
    assert plan.seek_threads == (((0, (5,)), (60, (70,))),)


def test_groups_are_spread_over_threads_heaviest_first_to_the_least_loaded():
    plan = plan_pyav_decode(gop(240, 24), [10, 130, 230], seek_overhead=2, threads=2)
    # costs 11, 11, 15: the heaviest (216) takes one thread, the other two share the second
    assert plan.seek_threads == (((216, (230,)),), ((0, (10,)), (120, (130,))))
    assert len(plan_pyav_decode(gop(240, 24), [10, 130, 230], seek_overhead=2, threads=8).seek_threads) == 3


def test_timestamps_name_frames_in_presentation_order():
    # timestamps in stream time base units (512 per frame), demuxed out of order (B-frames): sorted, they index frames
    packets = PacketIndex(pts=[512 * i for i in range(96)], keyframe_pts=[0, 512 * 48])
    plan = plan_pyav_decode(packets, [3, 50], seek_overhead=2, threads=1)
    assert plan.seek_threads == (((0, (3,)), (48, (50,))),)


def test_unsampled_disposable_pictures_are_skipped_and_cost_nothing():
    packets = gop(10, 10, disposable_pts={1, 3, 5, 7})
    plan = plan_pyav_decode(packets, [2, 3, 8], seek_overhead=2, threads=1)
    assert plan.skip_pts == {1, 5, 7}  # 3 is sampled: it is decoded
    # with every other picture disposable, two seeks beat one pass that decodes half the frames
    packets = gop(200, 100, disposable_pts=set(range(1, 200, 2)))
    assert plan_pyav_decode(packets, [4, 190], seek_overhead=2, threads=1).seeks
    packets = gop(200, 100, disposable_pts=set(range(1, 200, 2)))
    assert plan_pyav_decode(packets, [4, 110], seek_overhead=60, threads=1).seeks is False


def test_a_stream_whose_timestamps_do_not_name_frames_decodes_in_one_pass_without_skipping():
    packets = gop(240, 24, disposable_pts={1, 3, 5}, ordered_by_pts=False)
    plan = plan_pyav_decode(packets, [10, 130, 230], seek_overhead=2, threads=2)
    assert plan == DecodePlan(targets=(10, 130, 230))


def test_repeated_and_unsorted_indices_are_planned_once():
    assert plan_pyav_decode(gop(48, 48), [7, 3, 7, 3], seek_overhead=2, threads=1).targets == (3, 7)


@pytest.mark.parametrize("overhead, seeks", [(10**9, False), (-(10**9), True)])
def test_defaults_come_from_the_module_settings(monkeypatch, overhead, seeks):
    monkeypatch.setattr(planner, "_SEEK_OVERHEAD_FRAMES", overhead)
    monkeypatch.setattr(planner, "_DECODE_THREADS", 1)
    plan = plan_pyav_decode(gop(240, 24), list(range(0, 240, 2)))
    assert plan.seeks is seeks and len(plan.seek_threads) == (1 if seeks else 0)
