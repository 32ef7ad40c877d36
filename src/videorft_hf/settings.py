"""One frozen settings object per run: what its config says, resolved once, with the model where the model decides.

A run's settings come from several argument groups of its config (`videorft_hf.configs`: video sampling, precision,
skip limit, reward shaping) and, for the video sampling, from the model: the frame sides must be multiples of the
vision tower's patch factor, which is 32 for Qwen3-VL where the presets say 28 (`processing.model_sampling_config`).
`RunSettings.resolve` does this once; the GRPO trainer (`trainer.settings`), the SFT collator and trainer
(`DataCollatorForVideoLanguageModeling.from_config`, `VideoSFTTrainer.settings`), evaluation, the run record and the
model card read the result, so every stage decodes, records and states the same sampling.

The groups are frozen copies of the argument dataclasses (`VideoSettings` of `VideoSamplingArguments`, and so on),
built from their `dataclasses.fields`: a field added to an argument group is in the settings, the run record and the
card without being listed again. A config without a group (a plain `trl.GRPOConfig`) gives that group's defaults.

Example:
    >>> from videorft_hf.configs import VideoGRPOConfig
    >>> args = VideoGRPOConfig(output_dir="out", length_bonus=True, video_max_frames=8, report_to=[])  # doctest: +SKIP
    >>> settings = RunSettings.resolve(args, model.config, processor)  # doctest: +SKIP
    >>> settings.sampling.max_frames, settings.sampling.patch_factor, settings.shaping.length_bonus  # doctest: +SKIP
    (8, 32, True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .configs import (
    PrecisionArguments,
    RewardShapingArguments,
    SkipLimitArguments,
    VideoGRPOConfig,
    VideoSamplingArguments,
    configured_sampling,
    open_configured_frame_store,
)
from .frame_store import FrameStore
from .processing import model_sampling_config
from .video import VideoSamplingConfig

__all__ = [
    "PrecisionSettings",
    "RunSettings",
    "ShapingSettings",
    "SkipLimitSettings",
    "VideoSettings",
    "settings_fields",
]


def _frozen_copy(arguments: type, name: str, doc: str) -> type:
    """A frozen dataclass with the fields (names, types, defaults and help) of the argument dataclass `arguments`."""
    specs = []
    for spec in dataclasses.fields(arguments):
        if spec.default is not dataclasses.MISSING:
            default = dataclasses.field(default=spec.default, metadata=spec.metadata)
        else:
            default = dataclasses.field(default_factory=spec.default_factory, metadata=spec.metadata)
        specs.append((spec.name, spec.type, default))
    cls = dataclasses.make_dataclass(name, specs, frozen=True, namespace={"__doc__": doc, "__module__": __name__})
    cls.__module__ = __name__
    return cls


VideoSettings = _frozen_copy(
    VideoSamplingArguments,
    "VideoSettings",
    "The video fields of a config as given (`VideoSamplingArguments`: preset, overrides, decoder, frame cache and "
    "store, `on_bad_sample`), frozen.",
)
PrecisionSettings = _frozen_copy(
    PrecisionArguments, "PrecisionSettings", "How trainable weights are stored (`PrecisionArguments`), frozen."
)
SkipLimitSettings = _frozen_copy(
    SkipLimitArguments, "SkipLimitSettings", "How many skipped samples a run accepts (`SkipLimitArguments`), frozen."
)
ShapingSettings = _frozen_copy(
    RewardShapingArguments,
    "ShapingSettings",
    "The group-level reward shaping of GRPO (`RewardShapingArguments`: length bonus, T-GRPO), frozen.",
)
_GROUPS = {
    "video": (VideoSamplingArguments, VideoSettings),
    "precision": (PrecisionArguments, PrecisionSettings),
    "skip_limit": (SkipLimitArguments, SkipLimitSettings),
    "shaping": (RewardShapingArguments, ShapingSettings),
}
_SHARE_PROMPT_COMPUTE = next(f.default for f in dataclasses.fields(VideoGRPOConfig) if f.name == "share_prompt_compute")


def settings_fields(group: str) -> tuple[str, ...]:
    """The field names of a settings group (`"video"`, `"precision"`, `"skip_limit"` or `"shaping"`), in order.

    Example:
        >>> settings_fields("precision")
        ('trainable_dtype',)
    """
    return tuple(spec.name for spec in dataclasses.fields(_GROUPS[group][1]))


def _group(settings_class: type, args: Any) -> Any:
    """The group's values from `args` (any object with some of its fields), its defaults for the others."""
    values = {spec.name: getattr(args, spec.name) for spec in dataclasses.fields(settings_class) if hasattr(args, spec.name)}
    return settings_class(**values)


@dataclass(frozen=True)
class RunSettings:
    """The settings a run uses, resolved once from its config (and its model, where the model decides); frozen.

    Attributes:
        sampling: the `VideoSamplingConfig` media are decoded with: the config's preset and overrides, with the
            patch factor of the model's vision tower (Qwen3-VL: 32).
        video: the config's video fields as given (`VideoSettings`).
        precision: `PrecisionSettings`.
        skip_limit: `SkipLimitSettings`.
        shaping: `ShapingSettings` (GRPO; their defaults elsewhere).
        share_prompt_compute: compute each prompt and its media once per group (GRPO's `share_prompt_compute`).
    """

    sampling: VideoSamplingConfig
    video: Any = dataclasses.field(default_factory=VideoSettings)
    precision: Any = dataclasses.field(default_factory=PrecisionSettings)
    skip_limit: Any = dataclasses.field(default_factory=SkipLimitSettings)
    shaping: Any = dataclasses.field(default_factory=ShapingSettings)
    share_prompt_compute: bool = _SHARE_PROMPT_COMPUTE

    @classmethod
    def resolve(cls, args: Any = None, model_config: Any = None, processor: Any = None) -> RunSettings:
        """The settings of a run with config `args`, for a model with `model_config` and `processor`.

        Args:
            args: the run's config (`VideoGRPOConfig`, `VideoSFTConfig`, `EvalArguments`, a plain trl config, or
                None): each group's fields are read from it, the groups it lacks take their defaults.
            model_config: the model's config; its `model_type` decides the patch factor (never the checkpoint name).
                None when only the processor is known (the SFT collator): a Qwen-VL style processor then sets it.
            processor: the model's processor (None: the sampling is the config's, unchanged).

        Returns:
            The frozen settings.

        Raises:
            ValueError: an unknown sampling preset or an invalid override.
            UnsupportedVideoModelError: a supported video model whose processor has no patch size.
        """
        groups = {name: _group(settings_class, args) for name, (_, settings_class) in _GROUPS.items()}
        video = groups["video"]
        sampling = configured_sampling(video)
        if processor is not None:
            sampling = model_sampling_config(sampling, model_config, processor)
        return cls(
            sampling=sampling,
            **groups,
            share_prompt_compute=bool(getattr(args, "share_prompt_compute", _SHARE_PROMPT_COMPUTE)),
        )

    def open_frame_store(self) -> FrameStore | None:
        """The frame store the video settings name, opened for reading (None when unset).

        Raises:
            FrameStoreError: the folder holds no store.
        """
        return open_configured_frame_store(self.video.frame_store)

    def sampling_record(self) -> dict[str, Any]:
        """The sampling as a run record states it: the preset it came from, then every field of the config that ran
        (the model's patch factor included)."""
        return {"preset": self.video.video_sampling_preset, **self.sampling.to_dict()}

    def group(self, name: str) -> Mapping[str, Any]:
        """A settings group's values by field name, in field order (`"video"`, `"precision"`, `"skip_limit"`,
        `"shaping"`)."""
        return dataclasses.asdict(getattr(self, name))
