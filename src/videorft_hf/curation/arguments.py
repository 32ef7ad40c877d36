"""The settings of `videorft curate`: the stages, `CurationArguments`, and the backend each model stage is built
with (`build_backend`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..configs import VideoSamplingArguments
from ..rewards.semantic import DEFAULT_SEMANTIC_MODEL
from .backends import MEDIA_MODES, ChatBackend, OpenAIChatBackend, TransformersChatBackend

STAGES: tuple[str, ...] = ("describe", "reason", "revise", "filter")
MODEL_STAGES: tuple[str, ...] = ("describe", "reason", "revise")
CLOSED_FORM_TYPES: tuple[str, ...] = ("multiple choice", "numerical", "regression", "OCR")
OPEN_ENDED_TYPES: tuple[str, ...] = ("free-form",)
BACKENDS: tuple[str, ...] = ("openai", "transformers")


@dataclass
class CurationArguments(VideoSamplingArguments):
    """Arguments of `videorft curate` (also usable from Python with `run_curation`).

    Backend settings (`backend`, `model`, `base_url`, `api_key_env`, `concurrency`) apply to every model stage;
    `<stage>_<setting>` (stage = describe, reason or revise) overrides one for one stage. The video sampling fields
    come from `VideoSamplingArguments` (the training preset by default: 16 frames at 128*28*28 pixels).
    """

    input: list[str] = field(
        default_factory=list, metadata={"help": "Release files (JSON lines or a JSON array) of records to curate."}
    )
    media_root: str | None = field(
        default=None,
        metadata={"help": "Folder the records' './' media paths are relative to (default: the first input's folder)."},
    )
    output_dir: str = field(default="curated", metadata={"help": "Where stage files and the CoT records go."})
    backend: str = field(
        default="openai",
        metadata={"help": "'openai' (any OpenAI-compatible endpoint) or 'transformers' (a local model in process)."},
    )
    model: str | None = field(
        default=None,
        metadata={"help": "Model name the endpoint serves, or the checkpoint to load for the transformers backend."},
    )
    base_url: str = field(
        default="http://127.0.0.1:8000/v1", metadata={"help": "OpenAI-compatible API root, ending in /v1."}
    )
    api_key_env: str | None = field(
        default="OPENAI_API_KEY",
        metadata={"help": "Environment variable holding the API key (unset or empty: no key is sent)."},
    )
    concurrency: int = field(default=8, metadata={"help": "Requests in flight at once, per stage."})
    media_mode: str = field(
        default="frames",
        metadata={
            "help": "How frames reach an endpoint: 'frames' (one base64 JPEG image_url part per sampled frame, "
            "any server with image input) or 'video' (one video_url mp4 of the sampled frames; vLLM)."
        },
    )
    describe_backend: str | None = field(default=None, metadata={"help": "Overrides `backend` for describe."})
    describe_model: str | None = field(default=None, metadata={"help": "Overrides `model` for describe."})
    describe_base_url: str | None = field(default=None, metadata={"help": "Overrides `base_url` for describe."})
    describe_api_key_env: str | None = field(default=None, metadata={"help": "Overrides `api_key_env` for describe."})
    describe_concurrency: int | None = field(default=None, metadata={"help": "Overrides `concurrency` for describe."})
    describe_max_tokens: int = field(default=2048, metadata={"help": "Most tokens of a description."})
    describe_temperature: float = field(default=0.2, metadata={"help": "Sampling temperature of describe."})
    reason_backend: str | None = field(default=None, metadata={"help": "Overrides `backend` for reason."})
    reason_model: str | None = field(default=None, metadata={"help": "Overrides `model` for reason."})
    reason_base_url: str | None = field(default=None, metadata={"help": "Overrides `base_url` for reason."})
    reason_api_key_env: str | None = field(default=None, metadata={"help": "Overrides `api_key_env` for reason."})
    reason_concurrency: int | None = field(default=None, metadata={"help": "Overrides `concurrency` for reason."})
    reason_max_tokens: int = field(default=4096, metadata={"help": "Most tokens of a draft CoT."})
    reason_temperature: float = field(default=0.6, metadata={"help": "Sampling temperature of reason."})
    revise_backend: str | None = field(default=None, metadata={"help": "Overrides `backend` for revise."})
    revise_model: str | None = field(default=None, metadata={"help": "Overrides `model` for revise."})
    revise_base_url: str | None = field(default=None, metadata={"help": "Overrides `base_url` for revise."})
    revise_api_key_env: str | None = field(default=None, metadata={"help": "Overrides `api_key_env` for revise."})
    revise_concurrency: int | None = field(default=None, metadata={"help": "Overrides `concurrency` for revise."})
    revise_max_tokens: int = field(default=4096, metadata={"help": "Most tokens of a revised CoT."})
    revise_temperature: float = field(default=0.2, metadata={"help": "Sampling temperature of revise."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling mass of every model stage."})
    seed: int = field(default=0, metadata={"help": "Sampling seed sent with requests (plus the attempt number)."})
    attempts: int = field(
        default=3,
        metadata={
            "help": "Tries per unit and model stage when the output is unusable (invalid JSON, broken format); each "
            "retry tells the model what was wrong."
        },
    )
    json_mode: bool = field(
        default=False,
        metadata={"help": "Send response_format={'type': 'json_object'} with describe requests (vLLM, OpenAI)."},
    )
    request_timeout: float = field(default=300.0, metadata={"help": "Seconds to wait for one response."})
    max_retries: int = field(
        default=6, metadata={"help": "Retries of a request that failed transiently (429, 5xx, timeouts)."}
    )
    max_consecutive_failures: int = field(
        default=20, metadata={"help": "Stop a stage after this many failed requests in a row."}
    )
    dtype: str = field(default="auto", metadata={"help": "transformers backend: model dtype ('auto', 'bfloat16')."})
    device: str | None = field(default=None, metadata={"help": "transformers backend and SigLIP: device."})
    min_accuracy: float = field(
        default=0.9,
        metadata={
            "help": "Closed-form items are kept when accuracy_reward reaches this (multiple choice and numerical "
            "score 0 or 1; regression 1 - relative error; OCR 1 - WER)."
        },
    )
    min_semantic_consistency: float = field(
        default=0.25,
        metadata={
            "help": "Open-ended (free-form) items are kept when the semantic-consistency reward (gated on accuracy) "
            "reaches this. The paper publishes no value: tune it on a sample."
        },
    )
    semantic_model: str = field(
        default=DEFAULT_SEMANTIC_MODEL, metadata={"help": "Text-image encoder of the semantic-consistency check."}
    )
    reject_description_framing: bool = field(
        default=True,
        metadata={"help": "Reject a final CoT that still speaks of 'the description', 'the caption', ..."},
    )
    max_items: int | None = field(default=None, metadata={"help": "Curate only the first N records (smoke tests)."})
    redo_from: str | None = field(
        default=None,
        metadata={"help": "Discard the results of this stage and the stages after it (after a settings change)."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Discard everything in output_dir instead of resuming."}
    )
    progress: bool = field(default=True, metadata={"help": "Show a progress bar per stage."})
    # Overridden defaults of VideoSamplingArguments.
    frame_cache_bytes: int = field(
        default=1024**3,
        metadata={"help": "Reuse decoded frames up to this many bytes (describe, revise and filter see each video)."},
    )
    on_bad_sample: str = field(
        default="skip",
        metadata={
            "help": "Media that cannot be decoded: 'skip' (its records are rejected with the decode error) or "
            "'raise' (stop the run)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.input, str):
            self.input = [self.input]
        for stage in ("", *(f"{s}_" for s in MODEL_STAGES)):
            backend = getattr(self, f"{stage}backend")
            if backend is not None and backend not in BACKENDS:
                raise ValueError(f"{stage}backend must be one of {BACKENDS}, got {backend!r}.")
            concurrency = getattr(self, f"{stage}concurrency")
            if concurrency is not None and concurrency < 1:
                raise ValueError(f"{stage}concurrency must be >= 1, got {concurrency}.")
        for stage in MODEL_STAGES:
            if getattr(self, f"{stage}_max_tokens") < 1:
                raise ValueError(f"{stage}_max_tokens must be >= 1.")
            if not getattr(self, f"{stage}_temperature") >= 0:
                raise ValueError(f"{stage}_temperature must be >= 0 (0 is greedy).")
        if self.media_mode not in MEDIA_MODES:
            raise ValueError(f"media_mode must be one of {MEDIA_MODES}, got {self.media_mode!r}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}.")
        if self.max_retries < 0 or self.max_consecutive_failures < 1:
            raise ValueError("max_retries must be >= 0 and max_consecutive_failures >= 1.")
        if not 0 <= self.min_accuracy <= 1 or not 0 <= self.min_semantic_consistency <= 1:
            raise ValueError("min_accuracy and min_semantic_consistency must lie in [0, 1].")
        if self.redo_from is not None and self.redo_from not in STAGES:
            raise ValueError(f"redo_from must be one of {STAGES}, got {self.redo_from!r}.")
        if self.max_items is not None and self.max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {self.max_items}.")

    def stage_setting(self, stage: str, name: str) -> Any:
        """The value of backend setting `name` for `stage`: `<stage>_<name>` when set, else the shared `<name>`.

        Example:
            >>> CurationArguments(model="big-vlm", reason_model="reasoner").stage_setting("reason", "model")
            'reasoner'
        """
        value = getattr(self, f"{stage}_{name}")
        return getattr(self, name) if value is None else value


def build_backend(args: CurationArguments, stage: str, cache: dict | None = None) -> ChatBackend:
    """Builds the backend of a model stage from `args`.

    Args:
        args: the run's arguments.
        stage: "describe", "reason" or "revise".
        cache: backends already built, keyed by their settings, so that stages naming one local model load it once.

    Returns:
        An `OpenAIChatBackend` or a `TransformersChatBackend`.

    Raises:
        ValueError: no model was named for the stage.

    Example:
        >>> build_backend(CurationArguments(model="Qwen/Qwen2.5-VL-7B-Instruct"), "describe").info()["backend"]
        'openai'
    """
    kind, model = args.stage_setting(stage, "backend"), args.stage_setting(stage, "model")
    if not model:
        raise ValueError(f"No model for the {stage} stage: pass --model (every stage) or --{stage}_model.")
    if kind == "openai":
        key: tuple = (kind, args.stage_setting(stage, "base_url"), model, args.stage_setting(stage, "api_key_env"))
    else:
        key = (kind, model)
    if cache is not None and key in cache:
        return cache[key]
    if kind == "openai":
        backend: ChatBackend = OpenAIChatBackend(
            key[1],
            model,
            api_key_env=key[3],
            media_mode=args.media_mode,
            timeout=args.request_timeout,
            max_retries=args.max_retries,
        )
    else:
        backend = TransformersChatBackend.from_pretrained(model, dtype=args.dtype, device=args.device)
    if cache is not None:
        cache[key] = backend
    return backend
