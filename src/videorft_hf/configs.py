"""Configs that extend trl's: the video sampling and reward-shaping fields the VideoRFT recipe needs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from transformers import TrainingArguments
from trl import GRPOConfig, ScriptArguments, SFTConfig

from .frame_store import STORE_ENV, FrameStore, FrameStoreError, open_frame_store
from .skips import DEFAULT_MAX_SKIPPED_FRACTION
from .video import VideoSamplingConfig

# Option of `VideoSamplingArguments` -> the `VideoSamplingConfig` field it overrides.
SAMPLING_OVERRIDES: dict[str, str] = {
    "video_fps": "fps",
    "video_min_frames": "min_frames",
    "video_max_frames": "max_frames",
    "video_min_pixels": "min_pixels",
    "video_max_pixels": "max_pixels",
    "image_min_pixels": "image_min_pixels",
    "image_max_pixels": "image_max_pixels",
}


def sampling_flags(config: VideoSamplingConfig, preset: str | None = None) -> list[str] | None:
    """The command-line flags that select `config`: a preset, then the overrides that differ from it.

    Args:
        config: The sampling to reproduce (e.g. a run record's).
        preset: The preset it was built from, when known (else the preset that needs the fewest overrides).

    Returns:
        The flags, such as `["--video_sampling_preset", "video-r1-train", "--video_max_frames", "4", ...]`, or None
        when no flags select `config` (it differs from every preset in a field that has no flag, `total_pixels`).

    Example:
        >>> sampling_flags(VideoSamplingConfig.from_preset("videorft-eval", max_frames=16), "videorft-eval")
        ['--video_sampling_preset', 'videorft-eval', '--video_max_frames', '16']
    """
    presets = [preset] if preset in VideoSamplingConfig.preset_names() else VideoSamplingConfig.preset_names()
    best = None
    for name in presets:
        differences = config.differences(VideoSamplingConfig.from_preset(name))
        if set(differences) - set(SAMPLING_OVERRIDES.values()):
            continue
        flags = ["--video_sampling_preset", name]
        for option, field_name in SAMPLING_OVERRIDES.items():
            if field_name in differences:
                value = differences[field_name][0]
                flags += [f"--{option}", f"{value:g}" if field_name == "fps" else str(value)]
        if best is None or len(flags) < len(best):
            best = flags
    return best


@dataclass
class VideoSamplingArguments:
    """Video sampling fields shared by the SFT, GRPO and evaluation configs: a preset, then optional overrides."""

    video_sampling_preset: str = field(
        default="videorft-train",
        metadata={"help": "Sampling preset: 'videorft-train', 'videorft-eval' or 'video-r1-train'."},
    )
    video_fps: float | None = field(default=None, metadata={"help": "Override the preset's frames per second."})
    video_min_frames: int | None = field(default=None, metadata={"help": "Override the preset's fewest frames."})
    video_max_frames: int | None = field(default=None, metadata={"help": "Override the preset's most frames."})
    video_min_pixels: int | None = field(default=None, metadata={"help": "Override the fewest pixels per frame."})
    video_max_pixels: int | None = field(default=None, metadata={"help": "Override the most pixels per frame."})
    image_min_pixels: int | None = field(default=None, metadata={"help": "Override the fewest pixels per image."})
    image_max_pixels: int | None = field(default=None, metadata={"help": "Override the most pixels per image."})
    video_backend: str = field(
        default="auto", metadata={"help": "Video decoder: 'auto', 'decord', 'pyav' or 'torchcodec'."}
    )
    frame_cache_bytes: int = field(
        default=0,
        metadata={"help": "Keep decoded frames in memory up to this many bytes and reuse them (0 turns it off)."},
    )
    frame_store: str | None = field(
        default=None,
        metadata={
            "help": "Folder of a frame store (`videorft prepare-frames`) to read sampled frames from; a video missing "
            "from it is decoded. Only this config's consumers read it. The `videorft` commands default it to "
            "$VIDEORFT_FRAME_STORE."
        },
    )
    on_bad_sample: str = field(
        default="raise",
        metadata={
            "help": "What to do with a sample whose media cannot be decoded or whose vision tokens disagree with its "
            "features: 'raise' a typed error naming it, or 'skip' it (it gets no reward and no loss; every skip is "
            "counted and logged)."
        },
    )

    def __post_init__(self):
        if self.on_bad_sample not in ("raise", "skip"):
            raise ValueError(f"on_bad_sample must be 'raise' or 'skip', got {self.on_bad_sample!r}.")
        if self.frame_cache_bytes < 0:
            raise ValueError(f"frame_cache_bytes must be >= 0, got {self.frame_cache_bytes}.")
        self.sampling_config()  # validates the preset name and the overrides now, not at the first batch
        if self.frame_store is not None:
            self.open_frame_store()  # a folder that holds no store fails now, not at the first batch

    def open_frame_store(self) -> FrameStore | None:
        """The `FrameStore` named by `frame_store`, opened for reading (None when unset).

        Raises:
            FrameStoreError: `frame_store` names a folder that holds no store.
        """
        return open_configured_frame_store(self.frame_store)

    def sampling_config(self) -> VideoSamplingConfig:
        """The `VideoSamplingConfig` these fields describe (its patch factor is the presets'; the model's is set by
        `videorft_hf.settings.RunSettings.resolve`)."""
        return configured_sampling(self)


def configured_sampling(fields) -> VideoSamplingConfig:
    """The `VideoSamplingConfig` that video sampling fields describe: the preset, then the overrides that are set.

    Args:
        fields: any object with the fields of `VideoSamplingArguments` (a config, or its frozen settings).
    """
    overrides = {field_name: getattr(fields, option) for option, field_name in SAMPLING_OVERRIDES.items()}
    return VideoSamplingConfig.from_preset(
        fields.video_sampling_preset, **{k: v for k, v in overrides.items() if v is not None}
    )


def open_configured_frame_store(path: str | None) -> FrameStore | None:
    """The frame store a config's `frame_store` names, opened for reading (None when unset).

    Raises:
        FrameStoreError: the folder holds no store (the message says where the value came from).
    """
    try:
        return open_frame_store(path)
    except FrameStoreError as error:
        raise FrameStoreError(
            f"frame_store={path} (from --frame_store, the recipe or ${STORE_ENV}): {error} Unset it to decode every "
            "video."
        ) from error


@dataclass
class PrecisionArguments:
    """How trainable weights are stored, shared by the SFT and GRPO configs (see `videorft_hf.modeling`)."""

    trainable_dtype: str = field(
        default="float32",
        metadata={
            "help": "dtype of the trainable weights (the master copy the optimiser updates): 'float32' upcasts "
            "bfloat16/float16 trainable weights so that small learning-rate steps are not rounded away, while frozen "
            "weights keep their dtype and compute runs under bf16 autocast; 'model' keeps them as loaded (refused "
            "when the learning rate is too small for their dtype). DeepSpeed keeps its own float32 master weights."
        },
    )

    def __post_init__(self):
        from .modeling import TRAINABLE_DTYPES

        if self.trainable_dtype not in TRAINABLE_DTYPES:
            raise ValueError(f"trainable_dtype must be one of {TRAINABLE_DTYPES}, got {self.trainable_dtype!r}.")


# transformers 5.25 renamed `gradient_checkpointing` to `activation_checkpointing` (the old name is a deprecated alias).
_HAS_ACTIVATION_CHECKPOINTING = "activation_checkpointing" in {f.name for f in dataclasses.fields(TrainingArguments)}


@dataclass
class CheckpointingArguments:
    """Activation (gradient) checkpointing under transformers' current name, with trl's default (on).

    trl 1.16 sets `gradient_checkpointing=True` by default, which transformers >= 5.25 reads as the deprecated alias
    being used and warns about in every run. Here both names default to unset: `activation_checkpointing` wins, a
    recipe that writes only `gradient_checkpointing` keeps working (transformers then names the new spelling to its
    author), and with neither set checkpointing is on, as in trl. On transformers < 5.25 the value is passed to
    `gradient_checkpointing`, the only name it has.
    """

    activation_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "Recompute activations in the backward pass instead of keeping them (less memory, about 20%% "
            "slower). Default: on, as in trl."
        },
    )
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "The former name of --activation_checkpointing (transformers 5.25 renamed it); still read."},
    )

    def _resolve_checkpointing(self) -> None:
        """Call before the trl config's `__post_init__` (see the class docstring)."""
        if self.activation_checkpointing is None and self.gradient_checkpointing is None:
            self.activation_checkpointing = True  # trl's default
        if not _HAS_ACTIVATION_CHECKPOINTING:
            if self.activation_checkpointing is not None:
                self.gradient_checkpointing = self.activation_checkpointing
            self.activation_checkpointing = self.gradient_checkpointing


@dataclass
class SkipLimitArguments:
    """How many skipped samples (`on_bad_sample="skip"`) a training run accepts, shared by the SFT and GRPO configs
    (see `videorft_hf.skips`)."""

    max_skipped_fraction: float = field(
        default=DEFAULT_MAX_SKIPPED_FRACTION,
        metadata={
            "help": "With on_bad_sample='skip': the share of the run's samples (max_steps times the global batch) "
            "that may be skipped; the run stops with an error naming the first skips as soon as more are, as it does "
            "at a step whose samples are all skipped (whatever this value). The run record states the skips."
        },
    )

    def __post_init__(self):
        if not 0.0 <= self.max_skipped_fraction <= 1.0:
            raise ValueError(
                f"max_skipped_fraction must be between 0 and 1 (a share of the run's samples), got "
                f"{self.max_skipped_fraction}."
            )


GENERATION_ENGINES = ("compiled", "transformers")
# The attention implementations the rollout engine ("compiled") runs: they take its 4-D mask as it is.
ENGINE_ATTENTION = ("sdpa", "eager")


def default_generation_engine(device_type: str, engine_can_run: bool = True) -> str:
    """The generation engine of a run that does not choose one: the rollout engine (`"compiled"`) on CUDA, where its
    compiled decode step pays, wherever it can run; `generate` (`"transformers"`) elsewhere. The one rule training
    (`settings.resolve_generation_engine`) and evaluation (`evaluation.arguments.resolve_generation_engine`) share.

    Example:
        >>> default_generation_engine("cuda"), default_generation_engine("cpu")
        ('compiled', 'transformers')
    """
    return "compiled" if device_type == "cuda" and engine_can_run else "transformers"


class GenerationEngineError(ValueError):
    """A `generation_engine` setting that cannot run with the rest of the configuration (or the model)."""


@dataclass
class GenerationEngineArguments:
    """Which generator produces GRPO's rollouts when vLLM does not (see `videorft_hf.rollout` and
    `videorft_hf.settings.resolve_generation_engine`)."""

    generation_engine: str | None = field(
        default=None,
        metadata={
            "help": "Generator of the rollouts without vLLM: 'compiled' (videorft_hf.rollout.RolloutEngine: each "
            "prompt prefilled once, a static KV cache, the decode step compiled into a CUDA graph on CUDA and run "
            "eagerly elsewhere, weights in the compute dtype refreshed after each optimizer step) or 'transformers' "
            "(model.generate, each group's prompt prefilled once). Default: 'compiled' on CUDA for Qwen-VL models "
            "with sdpa or eager attention, else 'transformers'; always 'transformers' with FSDP or DeepSpeed ZeRO-3 "
            "(sharded weights), where 'compiled' is refused. Unset with use_vllm (vLLM generates). The default "
            "applies to the batches this package encodes (video, mixed media); text and image batches keep trl's "
            "generate unless 'compiled' is set explicitly."
        },
    )
    generation_merge_lora: bool = field(
        default=False,
        metadata={
            "help": "With generation_engine='compiled' and LoRA adapters: generate with merged copies W0 + s*B@A in "
            "the compute dtype, rewritten after each optimizer step (QLoRA: a bf16 copy of the base, more memory, "
            "no 4-bit or adapter kernels in the decode step) instead of the base (4-bit with QLoRA) and its adapters."
        },
    )

    def __post_init__(self):
        if self.generation_engine is not None and self.generation_engine not in GENERATION_ENGINES:
            raise GenerationEngineError(
                f"generation_engine must be one of {GENERATION_ENGINES} or unset (the default for the device), got "
                f"{self.generation_engine!r}."
            )
        if getattr(self, "use_vllm", False) and self.generation_engine is not None:
            raise GenerationEngineError(
                f"generation_engine={self.generation_engine!r} with use_vllm=True: vLLM generates the rollouts, so "
                "no other generator runs. Unset generation_engine, or set use_vllm=False."
            )
        if self.generation_engine == "compiled" and getattr(self, "use_transformers_paged", False):
            raise GenerationEngineError(
                "generation_engine='compiled' with use_transformers_paged=True: both name the generator. Unset one."
            )
        if self.generation_merge_lora and self.generation_engine == "transformers":
            raise GenerationEngineError(
                "generation_merge_lora=True is an option of generation_engine='compiled', but generation_engine is "
                "'transformers'. Set generation_engine='compiled' (or leave it unset), or drop generation_merge_lora."
            )


@dataclass
class RewardShapingArguments:
    """The group-level reward shaping of the GRPO config: VideoRFT's length bonus and Video-R1's T-GRPO.

    These fields are the whole list `VideoGRPOTrainer` reads (a plain `GRPOConfig` gives their defaults). Each bonus
    is computed by `videorft_hf.rewards.shaping` after the rewards of all processes are gathered, added to the
    accuracy reward (so trl weights it as the accuracy reward) and logged as `shaping/length_bonus` or
    `shaping/temporal_bonus`.
    """

    accuracy_reward_name: str = field(
        default="accuracy_reward",
        metadata={
            "help": "Name of the reward function whose value the shaping terms test for correctness; the bonuses are "
            "added to it."
        },
    )
    length_bonus: bool = field(
        default=False,
        metadata={
            "help": "VideoRFT length control: when more than one completion of a group is correct (accuracy > "
            "`length_bonus_accuracy_threshold`), each correct one whose length lies in [length_bonus_min_tokens, "
            "length_bonus_max_tokens] gets `length_bonus_value`, added to the accuracy reward. Logged as "
            "shaping/length_bonus."
        },
    )
    length_bonus_min_tokens: int = field(default=320, metadata={"help": "Shortest completion that earns the bonus."})
    length_bonus_max_tokens: int = field(default=512, metadata={"help": "Longest completion that earns the bonus."})
    length_bonus_value: float = field(default=0.2, metadata={"help": "The length bonus."})
    length_bonus_accuracy_threshold: float = field(
        default=0.1, metadata={"help": "Length bonus: accuracy above which a completion counts as correct."}
    )
    temporal_grpo: bool = field(
        default=False,
        metadata={
            "help": "Video-R1's T-GRPO: also roll out num_generations/2 completions on frame-shuffled video (not "
            "trained on); if the ordered group's accuracy rate p >= temporal_ratio * the shuffled rate, correct "
            "ordered completions (accuracy > temporal_accuracy_threshold) get temporal_bonus, added to the accuracy "
            "reward. Logged as shaping/temporal_bonus, the shuffled rate as temporal/shuffled_accuracy."
        },
    )
    temporal_bonus: float = field(default=0.3, metadata={"help": "The T-GRPO bonus."})
    temporal_ratio: float = field(default=0.8, metadata={"help": "T-GRPO: p must reach this fraction of p~."})
    temporal_accuracy_threshold: float = field(
        default=0.1,
        metadata={
            "help": "T-GRPO: accuracy above which a completion, ordered or shuffled, counts as correct (in p, p~ and "
            "for the bonus)."
        },
    )

    def __post_init__(self):
        if self.length_bonus_min_tokens > self.length_bonus_max_tokens:
            raise ValueError(
                f"length_bonus_min_tokens ({self.length_bonus_min_tokens}) is above length_bonus_max_tokens "
                f"({self.length_bonus_max_tokens})."
            )


@dataclass
class VideoGRPOConfig(
    VideoSamplingArguments,
    PrecisionArguments,
    SkipLimitArguments,
    RewardShapingArguments,
    GenerationEngineArguments,
    CheckpointingArguments,
    GRPOConfig,
):
    """`trl.GRPOConfig` plus video sampling, training precision, the group-level reward shaping and the rollout
    generator (`generation_engine`).

    The defaults of the fields inherited from trl are trl's; the paper's values (beta 0.04, `loss_type="grpo"`,
    8 generations, ...) live in the recipes under `recipes/`.

    Example:
        >>> args = VideoGRPOConfig(output_dir="out", length_bonus=True, report_to=[])  # doctest: +SKIP
    """

    disable_dropout: bool = field(
        default=True,
        metadata={
            "help": "Turn off dropout in the policy and reference models (on by default here, unlike trl): dropout "
            "gives the old and new log-probs of the same tokens different masks, which adds noise to the ratio."
        },
    )
    share_prompt_compute: bool = field(
        default=True,
        metadata={
            "help": "In the log-prob passes (reference, old and policy), compute each unique prompt and its video once "
            "per micro-batch and let its completions attend to it, instead of once per completion. Same results "
            "(within float rounding); off runs the per-row passes. Needs sdpa or eager attention, else per row."
        },
    )

    def __post_init__(self):
        self._resolve_checkpointing()
        GRPOConfig.__post_init__(self)
        VideoSamplingArguments.__post_init__(self)
        PrecisionArguments.__post_init__(self)
        SkipLimitArguments.__post_init__(self)
        RewardShapingArguments.__post_init__(self)
        GenerationEngineArguments.__post_init__(self)
        if self.temporal_grpo and self.num_generations < 2:
            raise ValueError("temporal_grpo needs num_generations >= 2 (it rolls out num_generations // 2 shuffled).")


@dataclass
class VideoRFTScriptArguments(ScriptArguments):
    """trl's `ScriptArguments` plus what loading a VideoRFT dataset needs (`dataset_name` is a local folder, a data
    file or a Hub repo id; `dataset_config` picks a subset)."""

    media_root: str | None = field(
        default=None,
        metadata={"help": "Folder the records' `./` media paths are relative to. Media never leaves this folder."},
    )
    system_prompt: str | None = field(
        default=None,
        metadata={
            "help": "System prompt shared by SFT, RL and evaluation (default: none, as the released RL stage). "
            "Use the same value in every stage."
        },
    )
    on_invalid_record: str = field(
        default="raise",
        metadata={"help": "Invalid dataset records: 'raise' (naming row and field) or 'skip' (counted and logged)."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training rows (for smoke tests)."}
    )
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={
            "help": "GRPO reward functions: names in videorft_hf.rewards.REWARD_FUNCS (format_reward, "
            "accuracy_reward, semantic_consistency_reward; all three when unset) or dotted import paths."
        },
    )
    semantic_model_name_or_path: str = field(
        default="google/siglip-so400m-patch14-384",
        metadata={"help": "Text-image encoder of the semantic-consistency reward."},
    )
    freeze_vision_tower: bool = field(
        default=False,
        metadata={
            "help": "Keep the vision tower (and its merger) as loaded. Full fine-tuning: its parameters get no "
            "gradient. With --use_peft: no LoRA adapter is placed in it (otherwise adapters go wherever "
            "lora_target_modules match, the vision tower included; the default target is 'all-linear')."
        },
    )

    def __post_init__(self):
        if self.on_invalid_record not in ("raise", "skip"):
            raise ValueError(f"on_invalid_record must be 'raise' or 'skip', got {self.on_invalid_record!r}.")


@dataclass
class VideoSFTConfig(
    VideoSamplingArguments, PrecisionArguments, SkipLimitArguments, CheckpointingArguments, SFTConfig
):
    """`trl.SFTConfig` plus video sampling (used by `DataCollatorForVideoLanguageModeling`).

    `max_length` is never applied by cutting through vision tokens: a sample that does not fit raises a typed error
    naming it, or is skipped (counted and logged) when `on_bad_sample="skip"`.

    With `dataloader_num_workers > 0` the collator decodes video in worker processes, and they are started with
    `spawn` unless `dataloader_multiprocessing_context` says otherwise: a worker forked from a process that has
    decoded video (decord's threads, ffmpeg's) can inherit a lock held by a thread that does not exist in the child,
    and the training hangs waiting for its first batch.
    """

    def __post_init__(self):
        self._resolve_checkpointing()
        self._start_workers_clean()
        SFTConfig.__post_init__(self)
        VideoSamplingArguments.__post_init__(self)
        PrecisionArguments.__post_init__(self)
        SkipLimitArguments.__post_init__(self)

    def _start_workers_clean(self) -> None:
        if self.dataloader_num_workers > 0 and self.dataloader_multiprocessing_context is None:
            self.dataloader_multiprocessing_context = "spawn"
