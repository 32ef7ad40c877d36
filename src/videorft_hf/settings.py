"""One frozen settings object per run: what its config says, resolved once, with the model where the model decides.

A run's settings come from several argument groups of its config (`videorft_hf.configs`: video sampling, precision,
skip limit, reward shaping, the rollout generator) and, for the video sampling, from the model: the frame sides must
be multiples of the vision tower's patch factor, which is 32 for Qwen3-VL where the presets say 28
(`processing.model_sampling_config`). The rollout generator that runs (`generation_engine`) depends on the device,
on whether parameters are sharded and on the model (`resolve_generation_engine`).
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

import torch

from .configs import (
    ENGINE_ATTENTION,
    GenerationEngineArguments,
    GenerationEngineError,
    PrecisionArguments,
    RewardShapingArguments,
    SkipLimitArguments,
    VideoGRPOConfig,
    VideoSamplingArguments,
    configured_sampling,
    default_generation_engine,
    open_configured_frame_store,
)
from .frame_store import FrameStore
from .internals import attention_implementation
from .positions import POSITION_RULE_MODEL_TYPES
from .processing import model_sampling_config
from .video import VideoSamplingConfig

__all__ = [
    "GenerationSettings",
    "PrecisionSettings",
    "RunSettings",
    "ShapingSettings",
    "SkipLimitSettings",
    "VideoSettings",
    "compiled_engine_problem",
    "resolve_generation_engine",
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
GenerationSettings = _frozen_copy(
    GenerationEngineArguments,
    "GenerationSettings",
    "The rollout generator as the config asks for it (`GenerationEngineArguments`: `generation_engine`, None when "
    "unset, and `generation_merge_lora`), frozen; `RunSettings.generation_engine` is the one that runs.",
)
_GROUPS = {
    "video": (VideoSamplingArguments, VideoSettings),
    "precision": (PrecisionArguments, PrecisionSettings),
    "skip_limit": (SkipLimitArguments, SkipLimitSettings),
    "shaping": (RewardShapingArguments, ShapingSettings),
    "generation": (GenerationEngineArguments, GenerationSettings),
}
_SHARE_PROMPT_COMPUTE = next(f.default for f in dataclasses.fields(VideoGRPOConfig) if f.name == "share_prompt_compute")


def settings_fields(group: str) -> tuple[str, ...]:
    """The field names of a settings group (`"video"`, `"precision"`, `"skip_limit"`, `"shaping"` or
    `"generation"`), in order.

    Example:
        >>> settings_fields("precision")
        ('trainable_dtype',)
    """
    return tuple(spec.name for spec in dataclasses.fields(_GROUPS[group][1]))


def _group(settings_class: type, args: Any) -> Any:
    """The group's values from `args` (any object with some of its fields), its defaults for the others."""
    values = {spec.name: getattr(args, spec.name) for spec in dataclasses.fields(settings_class) if hasattr(args, spec.name)}
    return settings_class(**values)


def compiled_engine_problem(model_config: Any) -> str | None:
    """Why the rollout engine (`videorft_hf.rollout.RolloutEngine`) cannot generate with a model, or None when it can.

    The engine's own requirements, read off the model's config before anything is built: a Qwen-VL model (its
    positions follow Qwen's M-RoPE rule), sdpa or eager attention, no sliding-window layers.

    Args:
        model_config: the model's config (None: nothing is known, so no problem is reported).

    Returns:
        A sentence naming the problem, or None.

    Example:
        >>> from videorft_hf.testing import build_tiny_vlm
        >>> compiled_engine_problem(build_tiny_vlm("qwen2_5_vl")[0].config) is None  # doctest: +SKIP
        True
    """
    if model_config is None:
        return None
    model_type = getattr(model_config, "model_type", None)
    if model_type not in POSITION_RULE_MODEL_TYPES:
        return f"it generates with Qwen-VL models ({', '.join(POSITION_RULE_MODEL_TYPES)}), and this model is {model_type!r}"
    implementation = attention_implementation(model_config)
    if implementation not in (None, *ENGINE_ATTENTION):
        return f"it runs sdpa or eager attention, and this model uses {implementation!r} (load it with attn_implementation='sdpa')"
    if "sliding_attention" in (getattr(model_config.get_text_config(), "layer_types", None) or ()):
        return "it does not support sliding-window attention layers, and this model has some"
    return None


def resolve_generation_engine(
    requested: str | None,
    *,
    use_vllm: bool = False,
    device_type: str = "cpu",
    sharded: bool = False,
    model_config: Any = None,
) -> str:
    """The generator of a run's rollouts: `"vllm"`, `"compiled"` (the rollout engine) or `"transformers"`.

    With vLLM, vLLM (the config refuses a `generation_engine` next to `use_vllm`). Unset (`requested=None`): the
    engine on CUDA, where its compiled decode step pays, `generate` elsewhere (CPU, MPS), and `generate` wherever the
    engine cannot run: sharded parameters (FSDP, DeepSpeed ZeRO-3: the engine generates with whole weights that a
    process holds) or a model it does not support (`compiled_engine_problem`). An explicit `"compiled"` it cannot
    honour is an error, never a silent substitute.

    Args:
        requested: the config's `generation_engine` (None, `"compiled"` or `"transformers"`).
        use_vllm: the config's `use_vllm`.
        device_type: the device the run generates on (`"cuda"`, `"cpu"`, `"mps"`, ...).
        sharded: the policy's parameters are sharded across processes (FSDP or DeepSpeed ZeRO-3).
        model_config: the policy's config (None: not checked).

    Returns:
        The generator that runs.

    Raises:
        GenerationEngineError: `"compiled"` with sharded parameters or a model the engine does not support.

    Example:
        >>> resolve_generation_engine(None, device_type="cpu"), resolve_generation_engine(None, device_type="cuda")
        ('transformers', 'compiled')
    """
    if use_vllm:
        return "vllm"
    if requested == "transformers":
        return "transformers"
    problem = compiled_engine_problem(model_config)
    if requested == "compiled":
        if sharded:
            raise GenerationEngineError(
                "generation_engine='compiled' with sharded parameters (FSDP or DeepSpeed ZeRO-3): the rollout engine "
                "generates with whole weights held by each process. Set generation_engine='transformers' (or leave it "
                "unset), or train with DDP or DeepSpeed ZeRO-2."
            )
        if problem:
            raise GenerationEngineError(
                f"generation_engine='compiled' cannot run with this model: {problem}. Set "
                "generation_engine='transformers' (or leave it unset)."
            )
        return "compiled"
    return default_generation_engine(device_type, engine_can_run=not sharded and problem is None)


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
        generation: `GenerationSettings`, as the config asks (GRPO; their defaults elsewhere).
        generation_engine: the generator of the rollouts that runs (`resolve_generation_engine`): `"vllm"`,
            `"compiled"` or `"transformers"`.
        share_prompt_compute: compute each prompt and its media once per group (GRPO's `share_prompt_compute`).
    """

    sampling: VideoSamplingConfig
    video: Any = dataclasses.field(default_factory=VideoSettings)
    precision: Any = dataclasses.field(default_factory=PrecisionSettings)
    skip_limit: Any = dataclasses.field(default_factory=SkipLimitSettings)
    shaping: Any = dataclasses.field(default_factory=ShapingSettings)
    generation: Any = dataclasses.field(default_factory=GenerationSettings)
    generation_engine: str = "transformers"
    share_prompt_compute: bool = _SHARE_PROMPT_COMPUTE

    @classmethod
    def resolve(
        cls,
        args: Any = None,
        model_config: Any = None,
        processor: Any = None,
        *,
        device_type: str | None = None,
        sharded: bool = False,
    ) -> RunSettings:
        """The settings of a run with config `args`, for a model with `model_config` and `processor`.

        Args:
            args: the run's config (`VideoGRPOConfig`, `VideoSFTConfig`, `EvalArguments`, a plain trl config, or
                None): each group's fields are read from it, the groups it lacks take their defaults.
            model_config: the model's config; its `model_type` decides the patch factor (never the checkpoint name).
                None when only the processor is known (the SFT collator): a Qwen-VL style processor then sets it.
            processor: the model's processor (None: the sampling is the config's, unchanged).
            device_type: the device the run generates on (None: `"cuda"` when CUDA is available and the config does
                not set `use_cpu`, else `"cpu"`).
            sharded: the policy's parameters are sharded (FSDP or DeepSpeed ZeRO-3).

        Returns:
            The frozen settings.

        Raises:
            ValueError: an unknown sampling preset or an invalid override.
            GenerationEngineError: `generation_engine="compiled"` where the engine cannot run
                (`resolve_generation_engine`).
            UnsupportedVideoModelError: a supported video model whose processor has no patch size.
        """
        groups = {name: _group(settings_class, args) for name, (_, settings_class) in _GROUPS.items()}
        video = groups["video"]
        sampling = configured_sampling(video)
        if processor is not None:
            sampling = model_sampling_config(sampling, model_config, processor)
        if device_type is None:
            device_type = "cuda" if torch.cuda.is_available() and not getattr(args, "use_cpu", False) else "cpu"
        engine = resolve_generation_engine(
            groups["generation"].generation_engine,
            use_vllm=bool(getattr(args, "use_vllm", False)),
            device_type=device_type,
            sharded=sharded,
            model_config=model_config,
        )
        return cls(
            sampling=sampling,
            **groups,
            generation_engine=engine,
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
        `"shaping"`, `"generation"`)."""
        return dataclasses.asdict(getattr(self, name))
