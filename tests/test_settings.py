"""RunSettings: a run's settings resolved once from its config and model, frozen, with fields from the dataclasses."""

import dataclasses

import pytest
from trl import GRPOConfig

from videorft_hf.configs import (
    PrecisionArguments,
    RewardShapingArguments,
    SkipLimitArguments,
    VideoGRPOConfig,
    VideoSamplingArguments,
    VideoSFTConfig,
)
from videorft_hf.evaluation import EvalArguments
from videorft_hf.settings import RunSettings, settings_fields
from videorft_hf.testing import build_tiny_processor
from videorft_hf.video import VideoSamplingConfig


def grpo(**overrides):
    return VideoGRPOConfig(output_dir="out", report_to=[], use_cpu=True, **overrides)


def test_groups_carry_every_field_of_their_argument_dataclass_and_are_frozen():
    args = grpo(length_bonus=True, temporal_bonus=0.5, video_max_frames=32, max_skipped_fraction=0.2,
                trainable_dtype="model", share_prompt_compute=False, on_bad_sample="skip")
    settings = RunSettings.resolve(args)
    for group, arguments in (("video", VideoSamplingArguments), ("precision", PrecisionArguments),
                             ("skip_limit", SkipLimitArguments), ("shaping", RewardShapingArguments)):
        names = [f.name for f in dataclasses.fields(arguments)]
        assert settings_fields(group) == tuple(names)
        assert settings.group(group) == {name: getattr(args, name) for name in names}
    assert settings.share_prompt_compute is False and settings.sampling.max_frames == 32
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.shaping.length_bonus = False
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.sampling = None


def test_a_plain_trl_config_gives_the_defaults():
    settings = RunSettings.resolve(GRPOConfig(output_dir="out", report_to=[], use_cpu=True))
    assert settings.sampling == VideoSamplingConfig.from_preset("videorft-train")
    assert settings.shaping.length_bonus is False and settings.shaping.accuracy_reward_name == "accuracy_reward"
    assert settings.precision.trainable_dtype == "float32" and settings.skip_limit.max_skipped_fraction == 0.05
    assert settings.video.on_bad_sample == "raise" and settings.share_prompt_compute is True


@pytest.mark.parametrize("family, side", [("qwen2_5_vl", 28), ("qwen3_vl", 32)])
def test_the_model_decides_the_patch_factor(family, side):
    """The frame sides follow the vision tower (patch size x merge size, read off the processor here), whatever the
    config's preset says; the config's own values are kept."""
    processor = build_tiny_processor(family)
    assert processor.video_processor.patch_size * processor.video_processor.merge_size == side
    for args in (grpo(video_max_frames=24), VideoSFTConfig(output_dir="out", report_to=[], use_cpu=True,
                                                           video_max_frames=24)):
        settings = RunSettings.resolve(args, None, processor)
        assert settings.sampling.patch_factor == side and settings.sampling.max_frames == 24
        assert settings.sampling_record() == {"preset": "videorft-train", **settings.sampling.to_dict()}
    assert RunSettings.resolve(grpo()).sampling.patch_factor == 28  # without a processor: the preset's


def test_evaluation_arguments_keep_their_own_defaults():
    settings = RunSettings.resolve(EvalArguments())
    assert settings.sampling == VideoSamplingConfig.from_preset("videorft-eval")
    assert settings.video.on_bad_sample == "skip" and settings.video.frame_cache_bytes == 2 * 1024**3
