"""`videorft curate`: the paper's CoT data engine, resumable, over records of the release schema.

Four stages turn question-answer records into verified chain-of-thought records:

1. describe (per video or image, a vision-language model sees the frames): a structured representation, a caption
   plus per-timestamp entries with objects, actions, scene, spatial relations and interactions, validated against
   `DESCRIPTION_SCHEMA`. Unusable output (not JSON, or JSON that breaks the schema) is sent back to the model with
   what is wrong, up to `attempts` tries, then rejected with its reason.
2. reason (per question, a reasoning language model sees only the question, its options and that text): a CoT
   written with the cognition-inspired prompt (simulated viewing, task understanding, selective attention, visual
   reasoning, reflective answering with a self-check), which must end in `<think>...</think><answer>...</answer>`.
3. revise (per question, a vision-language model sees the frames and the draft): the draft revised for visual
   consistency, without description-based framing.
4. filter (local): closed-form items (multiple choice, numerical, regression, OCR) are kept when `accuracy_reward`
   of the answer reaches `min_accuracy`; open-ended items (free-form) when the semantic-consistency reward (SigLIP,
   gated on accuracy) reaches `min_semantic_consistency`; with `reject_description_framing`, a CoT that still speaks
   of "the description" or "the caption" is rejected too.

Prompts live in `videorft_hf.prompts` (`CURATION_*`); every stage's backend is chosen on its own (see
`videorft_hf.curation.backends`): an OpenAI-compatible endpoint or a transformers model in process. Frames are
sampled by `videorft_hf.video` with the run's `VideoSamplingConfig`, as in training.

Output folder:

- `stages/<stage>.jsonl`: one line per finished unit (a media file for describe, a question for the others), with
  its status ("ok" or "rejected" with `reason` and `detail`), its output and the tokens and requests it took. A line
  is appended and fsynced as soon as its unit finishes, so a run that is killed loses at most the units in flight; a
  re-run reads these files (a line torn by the kill is cut off and redone), skips what is finished and writes each
  unit once. Each line carries the hash of its inputs (`input_hash`): a unit whose inputs changed (an edited
  question, a redone upstream stage) is redone.
- `cot.jsonl`: the kept records in input order, in the release schema (`process` = `<think>...</think>`, the
  original `solution` and fields), ready for `dataset_scripts/videorft_cot_102k/build.py --input`.
- `rejected.jsonl`: every rejected record with the stage, the reason and details.
- `summary.json`: records in, kept, rejected per reason, unfinished; per stage: units in, ok, rejected per reason,
  prompt and completion tokens, requests.
- `run_config.json`: the settings each stage's results depend on; a re-run with other settings for a stage is refused
  unless `redo_from` names that stage (its results and those after it are discarded) or `overwrite_output_dir`.

A request that fails after its retries (a server down, a timeout) leaves its unit unfinished and unrecorded; the
run goes on, reports it, and a re-run retries it. `max_consecutive_failures` failures in a row stop the stage, and an
authentication error or an unknown model stops the run at once.

Example:
    ```bash
    vllm serve Qwen/Qwen2.5-VL-72B-Instruct --port 8000 &
    videorft curate --input qa.jsonl --media_root /data/videos --output_dir curated \\
        --base_url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-VL-72B-Instruct \\
        --reason_base_url https://api.deepseek.com/v1 --reason_model deepseek-reasoner \\
        --reason_api_key_env DEEPSEEK_API_KEY --concurrency 16
    ```

    ```python
    from videorft_hf.curation import CurationArguments, run_curation

    summary = run_curation(CurationArguments(input=["qa.jsonl"], media_root="/data/videos", output_dir="curated",
                                             model="Qwen/Qwen2.5-VL-7B-Instruct"))
    print(summary["kept"], summary["rejected"])
    ```
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from ..configs import VideoSamplingArguments
from ..jsonl import append_jsonl, output_dir_lock, read_keyed_jsonl, write_json, write_jsonl
from ..prompts import (
    CURATION_DESCRIBE_IMAGE_PROMPT,
    CURATION_DESCRIBE_VIDEO_PROMPT,
    CURATION_REASON_PROMPT,
    CURATION_RETRY_PROMPT,
    CURATION_REVISE_PROMPT,
    TYPE_TEMPLATE,
    format_question,
)
from ..rewards.accuracy import accuracy_reward
from ..rewards.semantic import DEFAULT_SEMANTIC_MODEL
from ..schema import RECORD_FIELDS, RecordValidationError, iter_release_records, resolve_media_path, validate_record
from ..video import FrameCache, MediaDecodeError, VideoSamplingConfig, load_image, load_video_frames
from .backends import (
    MEDIA_MODES,
    ChatBackend,
    ChatResult,
    FatalBackendError,
    GenerationOptions,
    OpenAIChatBackend,
    TransformersChatBackend,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CLOSED_FORM_TYPES",
    "DESCRIPTION_SCHEMA",
    "OPEN_ENDED_TYPES",
    "STAGES",
    "CurationAborted",
    "CurationArguments",
    "build_backend",
    "find_description_framing",
    "format_summary",
    "parse_cot",
    "parse_description",
    "read_stage_file",
    "run_curation",
]

STAGES: tuple[str, ...] = ("describe", "reason", "revise", "filter")
MODEL_STAGES: tuple[str, ...] = ("describe", "reason", "revise")
CLOSED_FORM_TYPES: tuple[str, ...] = ("multiple choice", "numerical", "regression", "OCR")
OPEN_ENDED_TYPES: tuple[str, ...] = ("free-form",)
BACKENDS: tuple[str, ...] = ("openai", "transformers")
_RUN_CONFIG = "run_config.json"

# The structured representation of stage 1 (the keys the describe prompts name).
DESCRIPTION_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "VideoRFT structured video representation",
    "type": "object",
    "required": ["caption", "frames"],
    "properties": {
        "caption": {"type": "string", "minLength": 1},
        "frames": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": [
                    "timestamp",
                    "caption",
                    "objects",
                    "actions",
                    "scene",
                    "spatial_relations",
                    "interactions",
                ],
                "properties": {
                    "timestamp": {"type": "number", "minimum": 0},
                    "caption": {"type": "string"},
                    "objects": {"type": "array", "items": {"type": "string"}},
                    "actions": {"type": "array", "items": {"type": "string"}},
                    "scene": {"type": "string"},
                    "spatial_relations": {"type": "array", "items": {"type": "string"}},
                    "interactions": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}

# Phrases that give away a CoT written from a text description rather than from watching (checked in the filter).
_DESCRIPTION_FRAMING = re.compile(
    r"\b(?:according to|based on|from|in|as (?:stated|mentioned|described|noted) in)\s+the\s+"
    r"(?:(?:provided|given|video|image|structured|textual)\s+)*"
    r"(?:description|caption|captions|transcript|annotations?)\b"
    r"|\bthe\s+(?:(?:provided|given|video|image|structured)\s+)*(?:description|caption)\s+"
    r"(?:says|said|states|mentions|notes|indicates|describes|tells|lists)\b"
    r"|\bstructured representation\b"
    r"|\b(?:provided|given)\s+(?:description|caption|captions|text|timestamps)\b",
    re.IGNORECASE,
)


class CurationAborted(RuntimeError):
    """The run stopped: a fatal backend error, or too many failures in a row. Finished units are saved."""


# --------------------------------------------------------------------------------------------- arguments
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


# --------------------------------------------------------------------------------------------- output checks
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*[ \t]*\n?(.*?)\n?```$", re.DOTALL)


@functools.cache
def _description_validator():
    try:
        import jsonschema
    except ImportError:
        raise ImportError(
            "The describe stage validates descriptions with jsonschema: pip install 'videorft_hf[curate]' "
            "(or pip install jsonschema)."
        ) from None
    return jsonschema.Draft202012Validator(DESCRIPTION_SCHEMA)


def parse_description(text: str) -> tuple[dict | None, str | None, str | None]:
    """Parses a describe output and validates it against `DESCRIPTION_SCHEMA`.

    Lenient where models commonly are: surrounding whitespace, a Markdown code fence, or text around one JSON object
    are tolerated; everything else must be right.

    Args:
        text: the model's output.

    Returns:
        `(description, None, None)` when valid, else `(None, reason, detail)` with reason "describe.invalid_json"
        or "describe.schema" and a detail saying what is wrong.

    Example:
        >>> parse_description('{"caption": "A dog runs."}')[1:]
        ('describe.schema', "(top level): 'frames' is a required property")
    """
    validator = _description_validator()
    import jsonschema  # importable: _description_validator checked it

    stripped = text.strip()
    if not stripped:
        return None, "describe.invalid_json", "the output is empty"
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1).strip()
    start, end = stripped.find("{"), stripped.rfind("}")
    candidate = stripped[start : end + 1] if 0 <= start < end else stripped
    try:
        value = json.loads(candidate)
    except json.JSONDecodeError as error:
        return (
            None,
            "describe.invalid_json",
            f"not valid JSON ({error.msg} at character {error.pos}): {stripped[:80]!r}",
        )
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        return None, "describe.schema", f"{where}: {error.message}"[:300]
    return value, None, None


def parse_cot(text: str, reasoning: str | None = None) -> tuple[str | None, str | None]:
    """Checks a reason / revise output and returns it normalised to `<think>...</think>\\n<answer>...</answer>`.

    Text before `<think>` and after `</answer>` (chatty preambles) is dropped; anything else must be right: one
    non-empty think block, then only whitespace, then one non-empty answer. When the output has no `<think>` but the
    server returned a separate reasoning channel (reasoning models behind vLLM's reasoning parser or hosted APIs),
    that reasoning becomes the think block.

    Args:
        text: the model's output.
        reasoning: the response's separate reasoning text, if any.

    Returns:
        `(normalised, None)`, or `(None, what is wrong)`.

    Example:
        >>> parse_cot("Sure! <think>Two cars pass.</think> <answer>2</answer>")
        ('<think>Two cars pass.</think>\\n<answer>2</answer>', None)
        >>> parse_cot("The answer is 2.")
        (None, 'no <think>...</think> block')
    """
    text = text.strip()
    if "<think>" not in text and reasoning and reasoning.strip():
        text = f"<think>{reasoning.strip()}</think>{text}"
    start = text.find("<think>")
    if start < 0:
        return None, "no <think>...</think> block"
    close = text.find("</think>", start)
    if close < 0:
        return None, "the <think> block is not closed with </think>"
    think = text[start + len("<think>") : close].strip()
    if not think:
        return None, "the <think> block is empty"
    if "<think>" in think or "<answer>" in think:
        return None, "the <think> block holds another <think> or an <answer>"
    rest = text[close + len("</think>") :]
    begin = rest.find("<answer>")
    if begin < 0:
        return None, "no <answer>...</answer> after </think>"
    if rest[:begin].strip():
        return None, "text between </think> and <answer>"
    finish = rest.find("</answer>", begin)
    if finish < 0:
        return None, "the <answer> block is not closed with </answer>"
    answer = rest[begin + len("<answer>") : finish].strip()
    if not answer:
        return None, "the <answer> block is empty"
    return f"<think>{think}</think>\n<answer>{answer}</answer>", None


def find_description_framing(text: str) -> str | None:
    """The first phrase of `text` that frames the reasoning as read from a description ("according to the
    description", "the caption says", "the structured representation"), or None.

    Example:
        >>> find_description_framing("Hmm, according to the description, the cup is red.")
        'according to the description'
        >>> find_description_framing("I see a red cup on the left.") is None
        True
    """
    match = _DESCRIPTION_FRAMING.search(text)
    return match.group(0) if match else None


# --------------------------------------------------------------------------------------------- stage files
def read_stage_file(path: str | os.PathLike, repair: bool = True) -> dict[str, dict]:
    """Reads a `stages/<stage>.jsonl` file: the last line written for each unit key.

    A kill while appending can leave a last line without its newline; with `repair` it is cut off the file (its unit
    counts as not done and is redone).

    Args:
        path: the stage file (a missing file reads as empty).
        repair: truncate a torn last line in place.

    Returns:
        `{key: line}`.

    Raises:
        ValueError: a complete line is not a JSON object with a `key` (the file was edited or is not a stage file).
    """
    return read_keyed_jsonl(
        path,
        repair,
        "videorft curate stage record",
        "fix or delete that line, or rerun with --redo_from <stage> / --overwrite_output_dir.",
    )


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:20]


# --------------------------------------------------------------------------------------------- the run
@dataclass
class _Item:
    key: str
    index: int
    record: dict[str, Any]
    media_path: str


@dataclass
class _StageRun:
    """Counters of one stage in this run (what the stage files hold is counted separately)."""

    errors: list[str] = field(default_factory=list)
    written: int = 0


class _Usage:
    """Tokens and requests of one unit, summed over its attempts."""

    def __init__(self):
        self.prompt_tokens = self.completion_tokens = self.requests = self.attempts = 0

    def add(self, result: ChatResult) -> None:
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.requests += result.requests
        self.attempts += 1

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "requests": self.requests,
            "attempts": self.attempts,
        }


def _item_keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """`str(problem_id)`, with `#2`, `#3`, ... for repeats, so that every record has its own key."""
    seen: Counter = Counter()
    keys = []
    for record in records:
        seen[record["problem_id"]] += 1
        count = seen[record["problem_id"]]
        keys.append(str(record["problem_id"]) if count == 1 else f"{record['problem_id']}#{count}")
    return keys


class _StageOutcomes:
    """What the units of one stage return, received in the main thread: a finished unit's line is appended (and
    fsynced) to the stage file; a failed unit is left unfinished and counted, and `max_consecutive_failures` failures
    in a row, an authentication error or an unknown model stop the stage (`CurationAborted`)."""

    def __init__(
        self,
        stage: str,
        stream,
        done: dict[str, dict],
        counts: Counter,
        run: _StageRun,
        max_consecutive_failures: int,
        bar,
    ):
        self.stage = stage
        self.stream = stream
        self.done = done
        self.counts = counts
        self.run = run
        self.max_consecutive_failures = max_consecutive_failures
        self.bar = bar
        self.consecutive = 0

    def receive(self, key: str, input_hash: str, future: Future) -> None:
        """Records the outcome of one finished unit."""
        try:
            line = future.result()
        except FatalBackendError as error:
            raise CurationAborted(f"The {self.stage} stage stopped: {error}") from error
        except (MediaDecodeError, ImportError):
            raise  # on_bad_sample="raise", or a missing dependency: nothing later will work
        except Exception as error:  # a failed request or a unit-level error: left unfinished
            self._failed(key, error)
        else:
            self.consecutive = 0
            line = {"key": key, "input_hash": input_hash, **line}
            append_jsonl(self.stream, [line])
            self.done[key] = line
            self.run.written += 1
            self.counts[line["status"]] += 1
        self.bar.update(1)
        self.bar.set_postfix(ok=self.counts["ok"], rejected=self.counts["rejected"], errors=self.counts["error"])

    def _failed(self, key: str, error: Exception) -> None:
        self.consecutive += 1
        message = f"{key}: {type(error).__name__}: {error}"
        self.run.errors.append(message)
        logger.warning("%s %s (left unfinished; a re-run retries it)", self.stage, message)
        if self.consecutive >= self.max_consecutive_failures:
            raise CurationAborted(
                f"The {self.stage} stage stopped after {self.consecutive} failed units in a row; the last: "
                f"{message}. Check the backend, then rerun the same command to continue."
            ) from error
        self.counts["error"] += 1


def _run_units(
    units: Sequence[tuple[str, str, Callable[[], dict]]],
    concurrency: int,
    thread_name_prefix: str,
    receive: Callable[[str, str, Future], None],
    on_abort: Callable[[], None] | None = None,
) -> None:
    """Runs the work of `units` (key, input hash, work) in `concurrency` threads, at most twice that many queued, and
    hands each finished future to `receive(key, input_hash, future)` in this thread, as they finish.

    When `receive` (or anything else) raises, requests in flight are not waited for (their units stay unfinished and
    are redone by a re-run) and `on_abort` is called, so that no thread keeps retrying in the background.
    """
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=thread_name_prefix)
    queue = iter(units)
    in_flight: dict[Future, tuple[str, str]] = {}

    def submit() -> None:
        while len(in_flight) < 2 * concurrency:
            unit = next(queue, None)
            if unit is None:
                return
            in_flight[pool.submit(unit[2])] = unit[:2]

    clean_exit = False
    try:
        submit()
        while in_flight:
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                receive(*in_flight.pop(future), future)
            submit()
        clean_exit = True
    finally:
        pool.shutdown(wait=clean_exit, cancel_futures=True)
        if not clean_exit and on_abort is not None:
            on_abort()


class _Curation:
    """One run over an output folder (see `run_curation`)."""

    def __init__(
        self,
        args: CurationArguments,
        backends: dict[str, ChatBackend],
        semantic_reward: Callable | None,
    ):
        self.args = args
        self.backends = backends
        self._semantic_reward = semantic_reward
        self.base_sampling = args.sampling_config()
        self.cache = FrameCache(args.frame_cache_bytes) if args.frame_cache_bytes else None
        self.store = args.open_frame_store()
        self.stage_dir = os.path.join(args.output_dir, "stages")
        self.lines: dict[str, dict[str, dict]] = {}
        self.runs: dict[str, _StageRun] = {stage: _StageRun() for stage in STAGES}
        self.inputs: dict[str, dict[str, str]] = {stage: {} for stage in STAGES}  # stage -> unit key -> input hash

    # ---------------------------------------------------------------- settings
    def stage_configs(self) -> dict[str, dict]:
        args = self.args

        def model_stage(stage: str, *templates: str) -> dict:
            config = {
                "backend": self.backends[stage].info(),
                "prompts": _digest(*templates, CURATION_RETRY_PROMPT),
                "max_tokens": getattr(args, f"{stage}_max_tokens"),
                "temperature": getattr(args, f"{stage}_temperature"),
                "top_p": args.top_p,
                "seed": args.seed,
                "attempts": args.attempts,
            }
            if stage != "reason":
                config["sampling"] = self.backends[stage].sampling_config(self.base_sampling).to_dict()
            return config

        describe = model_stage("describe", CURATION_DESCRIBE_VIDEO_PROMPT, CURATION_DESCRIBE_IMAGE_PROMPT)
        describe["json_mode"] = args.json_mode
        semantic = getattr(self._semantic_reward, "encoder", None)
        return {
            "describe": describe,
            "reason": model_stage("reason", CURATION_REASON_PROMPT),
            "revise": model_stage("revise", CURATION_REVISE_PROMPT),
            "filter": {
                "min_accuracy": args.min_accuracy,
                "min_semantic_consistency": args.min_semantic_consistency,
                "semantic_model": getattr(semantic, "model_name_or_path", None) or args.semantic_model,
                "reject_description_framing": args.reject_description_framing,
                "sampling": self.base_sampling.to_dict(),
            },
        }

    def check_run_config(self) -> None:
        args, output_dir = self.args, self.args.output_dir
        path = os.path.join(output_dir, _RUN_CONFIG)
        config = self.stage_configs()
        if args.overwrite_output_dir:
            for name in ("stages", "cot.jsonl", "rejected.jsonl", "summary.json", _RUN_CONFIG):
                target = os.path.join(output_dir, name)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                elif os.path.exists(target):
                    os.remove(target)
        redo = STAGES.index(args.redo_from) if args.redo_from else len(STAGES)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as stream:
                previous = json.load(stream)
            for position, stage in enumerate(STAGES):
                if position >= redo:
                    break
                old = previous.get(stage)
                if old is not None and old != config[stage]:
                    changed = sorted(name for name in config[stage] if old.get(name) != config[stage][name])
                    raise ValueError(
                        f"{output_dir}: the {stage} stage ran with other settings (changed: {', '.join(changed)}). "
                        f"Pass --redo_from {stage} to discard its results and those of the stages after it, use "
                        "another output_dir, or pass --overwrite_output_dir."
                    )
        os.makedirs(self.stage_dir, exist_ok=True)
        for stage in STAGES[redo:]:
            target = self.stage_path(stage)
            if os.path.exists(target):
                logger.info("Discarding %s (redo_from=%s).", target, args.redo_from)
                os.remove(target)
        write_json(path, config)

    def stage_path(self, stage: str) -> str:
        return os.path.join(self.stage_dir, f"{stage}.jsonl")

    # ---------------------------------------------------------------- media
    def media(self, item: _Item, config: VideoSamplingConfig) -> dict[str, Any]:
        """The item's media as a content part (frames decoded with `config`, through the frame cache)."""
        if item.record["data_type"] == "video":
            frames, metadata = load_video_frames(
                item.media_path, config, backend=self.args.video_backend, cache=self.cache, store=self.store
            )
            return {"type": "video", "frames": frames, "metadata": metadata}
        return {"type": "image", "image": load_image(item.media_path, config)}

    def _media_or_rejection(self, item: _Item, config: VideoSamplingConfig, stage: str):
        try:
            return self.media(item, config), None
        except MediaDecodeError as error:
            if self.args.on_bad_sample == "raise":
                raise
            return None, {"status": "rejected", "reason": f"{stage}.media_error", "detail": str(error)[:500]}

    # ---------------------------------------------------------------- model calls
    def _options(self, stage: str, attempt: int) -> GenerationOptions:
        return GenerationOptions(
            max_tokens=getattr(self.args, f"{stage}_max_tokens"),
            temperature=getattr(self.args, f"{stage}_temperature"),
            top_p=self.args.top_p,
            seed=self.args.seed + attempt,
            json_mode=self.args.json_mode and stage == "describe",
        )

    def _ask(self, stage: str, content: list[dict], check: Callable[[ChatResult], tuple[Any, str | None, str]]):
        """Asks the stage's model until `check` accepts an output or the attempts run out.

        `check(result)` returns `(value, None, _)` for a usable output, or `(None, reason, detail)`. A retry continues
        the conversation with the model's unusable answer and `CURATION_RETRY_PROMPT` saying what was wrong.
        """
        backend, usage = self.backends[stage], _Usage()
        messages: list[dict] = [{"role": "user", "content": content}]
        reason, detail, output = None, "", ""
        for attempt in range(self.args.attempts):
            result = backend.chat(messages, self._options(stage, attempt))
            usage.add(result)
            output = result.text
            value, reason, detail = check(result)
            if reason is None:
                return {"status": "ok", **value, "usage": usage.to_dict()}
            messages = [
                *messages,
                {"role": "assistant", "content": [{"type": "text", "text": result.text}]},
                {"role": "user", "content": [{"type": "text", "text": CURATION_RETRY_PROMPT.format(problem=detail)}]},
            ]
        return {
            "status": "rejected",
            "reason": reason,
            "detail": detail,
            "output": output,
            "usage": usage.to_dict(),
        }

    def describe(self, item: _Item) -> dict:
        config = self.backends["describe"].sampling_config(self.base_sampling)
        part, rejection = self._media_or_rejection(item, config, "describe")
        if rejection is not None:
            return rejection
        if part["type"] == "video":
            metadata = part["metadata"]
            times = [index / metadata.fps for index in metadata.frames_indices]
            prompt = CURATION_DESCRIBE_VIDEO_PROMPT.format(
                num_frames=len(times),
                duration=metadata.duration or 0.0,
                timestamps=", ".join(f"{t:.1f}" for t in times),
            )
        else:
            prompt = CURATION_DESCRIBE_IMAGE_PROMPT

        def check(result: ChatResult):
            description, reason, detail = parse_description(result.text)
            return {"description": description, "output": result.text}, reason, detail

        return self._ask("describe", [part, {"type": "text", "text": prompt}], check)

    def _question(self, item: _Item) -> tuple[str, str]:
        record = item.record
        question = format_question(record["problem"], record["problem_type"], record["options"])
        return question, TYPE_TEMPLATE[record["problem_type"]]

    @staticmethod
    def _cot_check(stage: str) -> Callable[[ChatResult], tuple[dict, str | None, str | None]]:
        def check(result: ChatResult):
            normalised, problem = parse_cot(result.text, result.reasoning)
            if problem is not None and result.finish_reason == "length":
                problem += " (the output hit max_tokens)"
            return (
                {"output": normalised, "raw_output": result.text},
                None if problem is None else f"{stage}.format",
                problem,
            )

        return check

    def reason(self, item: _Item, description: dict) -> dict:
        question, answer_format = self._question(item)
        video = item.record["data_type"] == "video"
        prompt = CURATION_REASON_PROMPT.format(
            media="video" if video else "image",
            as_it_unfolds=" as it unfolds over time" if video else "",
            description=json.dumps(description, ensure_ascii=False, indent=1),
            question=question,
            answer_format=answer_format,
        )
        return self._ask("reason", [{"type": "text", "text": prompt}], self._cot_check("reason"))

    def revise(self, item: _Item, draft: str) -> dict:
        config = self.backends["revise"].sampling_config(self.base_sampling)
        part, rejection = self._media_or_rejection(item, config, "revise")
        if rejection is not None:
            return rejection
        question, answer_format = self._question(item)
        prompt = CURATION_REVISE_PROMPT.format(
            media="video" if item.record["data_type"] == "video" else "image",
            question=question,
            draft=draft,
            answer_format=answer_format,
        )
        return self._ask("revise", [part, {"type": "text", "text": prompt}], self._cot_check("revise"))

    def semantic_reward(self) -> Callable:
        if self._semantic_reward is None:
            from ..rewards.semantic import get_semantic_consistency_reward

            self._semantic_reward = get_semantic_consistency_reward(self.args.semantic_model, device=self.args.device)
        return self._semantic_reward

    def filter(self, item: _Item, cot: str) -> dict:
        import numpy as np

        args, record = self.args, item.record
        if args.reject_description_framing:
            think = cot[len("<think>") : cot.find("</think>")]
            phrase = find_description_framing(think)
            if phrase is not None:
                return {"status": "rejected", "reason": "filter.description_framing", "detail": repr(phrase)}
        columns = {"solution": [record["solution"]], "problem_type": [record["problem_type"]]}
        accuracy = accuracy_reward([cot], **columns)[0]
        line: dict[str, Any] = {"accuracy": accuracy}
        if record["problem_type"] in CLOSED_FORM_TYPES:
            if accuracy is None or accuracy < args.min_accuracy:
                return {
                    "status": "rejected",
                    "reason": "filter.wrong_answer",
                    "detail": f"accuracy {accuracy} < {args.min_accuracy}",
                    **line,
                }
            return {"status": "ok", **line}
        part, rejection = self._media_or_rejection(item, self.base_sampling, "filter")
        if rejection is not None:
            return {**rejection, **line}
        # Copies: cached frames are read-only, and the encoder's processor warns about non-writable arrays.
        frames = np.array(part["frames"] if part["type"] == "video" else part["image"])
        consistency = self.semantic_reward()([cot], frames=[frames], **columns)[0]
        line["semantic_consistency"] = consistency
        if consistency is None or consistency < args.min_semantic_consistency:
            return {
                "status": "rejected",
                "reason": "filter.low_semantic_consistency",
                "detail": (
                    f"semantic consistency {consistency} < {args.min_semantic_consistency} (accuracy {accuracy})"
                ),
                **line,
            }
        return {"status": "ok", **line}

    # ---------------------------------------------------------------- stage runner
    def run_stage(self, stage: str, units: list[tuple[str, str, Callable[[], dict]]], concurrency: int) -> None:
        """Runs `units` (key, input hash, work) of a stage; appends and fsyncs one line per finished unit.

        Units already in the stage file with the same input hash are skipped. Only this (the main) thread writes.
        """
        from tqdm.auto import tqdm

        path = self.stage_path(stage)
        done = self.lines.setdefault(stage, read_stage_file(path))
        for key, input_hash, _ in units:
            self.inputs[stage][key] = input_hash
        pending = [unit for unit in units if done.get(unit[0], {}).get("input_hash") != unit[1]]
        counts = Counter(
            done[key]["status"]
            for key, input_hash, _ in units
            if key in done and done[key].get("input_hash") == input_hash
        )
        bar = tqdm(
            total=len(units),
            initial=len(units) - len(pending),
            desc=f"curate {stage}",
            unit="video" if stage == "describe" else "item",
            disable=not self.args.progress or not pending,
        )
        backend = self.backends.get(stage)
        resume = getattr(backend, "resume", None)
        if resume is not None:
            resume()  # retries are re-armed for this stage after an earlier stop
        run = self.runs[stage]
        with open(path, "a", encoding="utf-8") as stream:
            outcomes = _StageOutcomes(stage, stream, done, counts, run, self.args.max_consecutive_failures, bar)
            try:
                _run_units(
                    pending,
                    concurrency,
                    f"videorft-curate-{stage}",
                    outcomes.receive,
                    on_abort=getattr(backend, "cancel_pending", None),
                )
            finally:
                bar.close()
        logger.info(
            "%s: %d units, %d done before, %d written now (%d ok, %d rejected in all), %d failed.",
            stage,
            len(units),
            len(units) - len(pending),
            run.written,
            counts["ok"],
            counts["rejected"],
            len(run.errors),
        )

    # ---------------------------------------------------------------- the whole run
    def valid_line(self, stage: str, key: str) -> dict | None:
        line = self.lines.get(stage, {}).get(key)
        if line is None or line.get("input_hash") != self.inputs[stage].get(key):
            return None
        return line

    def run(self, items: list[_Item], invalid: list[dict], items_in: int) -> dict:
        args = self.args
        started = time.perf_counter()
        self.check_run_config()

        # 1. describe, once per media file
        by_media: dict[str, _Item] = {}
        for item in items:
            by_media.setdefault(item.record["path"], item)
        self.run_stage(
            "describe",
            [
                (path, _digest(path, item.record["data_type"]), functools.partial(self.describe, item))
                for path, item in by_media.items()
            ],
            args.stage_setting("describe", "concurrency"),
        )
        # 2. reason, per question, from the description only
        units = []
        for item in items:
            line = self.valid_line("describe", item.record["path"])
            if line is not None and line["status"] == "ok":
                record = item.record
                question = (record["problem"], record["options"], record["problem_type"], record["data_type"])
                units.append(
                    (
                        item.key,
                        _digest(question, line["description"]),
                        functools.partial(self.reason, item, line["description"]),
                    )
                )
        self.run_stage("reason", units, args.stage_setting("reason", "concurrency"))
        # 3. revise, per question, with the frames
        units = []
        for item in items:
            line = self.valid_line("reason", item.key)
            if line is not None and line["status"] == "ok":
                units.append(
                    (
                        item.key,
                        _digest(line["input_hash"], line["output"], item.record["path"]),
                        functools.partial(self.revise, item, line["output"]),
                    )
                )
        self.run_stage("revise", units, args.stage_setting("revise", "concurrency"))
        # 4. filter, per question, locally
        units = []
        for item in items:
            line = self.valid_line("revise", item.key)
            if line is not None and line["status"] == "ok":
                record = item.record
                units.append(
                    (
                        item.key,
                        _digest(line["input_hash"], line["output"], record["solution"], record["problem_type"]),
                        functools.partial(self.filter, item, line["output"]),
                    )
                )
        self.run_stage("filter", units, 1)
        return self.write_outputs(items, invalid, items_in, time.perf_counter() - started)

    def item_status(self, item: _Item) -> tuple[str, dict | None]:
        """("kept" | "rejected" | "unfinished", the deciding line)."""
        for stage in STAGES:
            key = item.record["path"] if stage == "describe" else item.key
            line = self.valid_line(stage, key)
            if line is None:
                return "unfinished", None
            if line["status"] == "rejected":
                return "rejected", {"stage": stage, **line}
        return "kept", line

    def write_outputs(self, items: list[_Item], invalid: list[dict], items_in: int, seconds: float) -> dict:
        output_dir = self.args.output_dir
        kept, rejected = [], list(invalid)
        unfinished = 0
        for item in items:
            status, line = self.item_status(item)
            if status == "kept":
                revised = self.valid_line("revise", item.key)["output"]
                process = revised[: revised.find("</think>") + len("</think>")]
                record = validate_record({**item.record, "process": process}, require_process=True)
                kept.append({name: record[name] for name in RECORD_FIELDS})
            elif status == "rejected":
                rejected.append(
                    {
                        "index": item.index,
                        "key": item.key,
                        "problem_id": item.record["problem_id"],
                        "path": item.record["path"],
                        "stage": line["stage"],
                        "reason": line["reason"],
                        "detail": line.get("detail"),
                    }
                )
            else:
                unfinished += 1
        rejected.sort(key=lambda row: row["index"])
        write_jsonl(os.path.join(output_dir, "cot.jsonl"), kept)
        write_jsonl(os.path.join(output_dir, "rejected.jsonl"), rejected)

        stages = {}
        for stage in STAGES:
            keys = self.inputs[stage]
            statuses: Counter = Counter()
            reasons: Counter = Counter()
            tokens = Counter()
            for key in keys:
                line = self.valid_line(stage, key)
                if line is None:
                    statuses["unfinished"] += 1
                    continue
                statuses[line["status"]] += 1
                if line["status"] == "rejected":
                    reasons[line["reason"]] += 1
            for line in self.lines.get(stage, {}).values():  # everything this output folder has spent
                tokens.update(line.get("usage", {}))
            stages[stage] = {
                "unit": "media" if stage == "describe" else "item",
                "in": len(keys),
                "ok": statuses["ok"],
                "rejected": dict(sorted(reasons.items())),
                "unfinished": statuses["unfinished"],
                "errors_this_run": len(self.runs[stage].errors),
                "prompt_tokens": tokens["prompt_tokens"],
                "completion_tokens": tokens["completion_tokens"],
                "requests": tokens["requests"],
            }
        written = sum(run.written for run in self.runs.values())
        summary = {
            "items_in": items_in,
            "invalid_records": len(invalid),
            "media": len(self.inputs["describe"]),
            "kept": len(kept),
            "rejected": dict(sorted(Counter(row["reason"] for row in rejected).items())),
            "unfinished": unfinished,
            "stages": stages,
            "this_run": {
                "seconds": round(seconds, 3),
                "units_written": written,
                "errors": [message for run in self.runs.values() for message in run.errors][:50],
            },
        }
        write_json(os.path.join(output_dir, "summary.json"), summary)
        logger.info(
            "Curated %d records: %d kept, %d rejected, %d unfinished (%s).",
            items_in,
            len(kept),
            len(rejected),
            unfinished,
            output_dir,
        )
        return summary


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary as a plain-text table: per stage units in, ok, rejected, unfinished and tokens, then the totals.

    Args:
        summary: what `run_curation` returns (or `summary.json` holds).

    Returns:
        The table.
    """
    lines = [
        f"{'stage':<10}{'unit':>6}{'in':>8}{'ok':>8}{'rejected':>10}{'unfinished':>12}{'requests':>10}"
        f"{'prompt tok':>12}{'completion tok':>16}"
    ]
    for stage, row in summary["stages"].items():
        lines.append(
            f"{stage:<10}{row['unit']:>6}{row['in']:>8}{row['ok']:>8}{sum(row['rejected'].values()):>10}"
            f"{row['unfinished']:>12}{row['requests']:>10}{row['prompt_tokens']:>12}{row['completion_tokens']:>16}"
        )
    lines.append(
        f"records in: {summary['items_in']}, kept: {summary['kept']}, rejected: {sum(summary['rejected'].values())}, "
        f"unfinished: {summary['unfinished']}"
    )
    lines += [f"  rejected {reason}: {count}" for reason, count in summary["rejected"].items()]
    return "\n".join(lines)


def _load_items(args: CurationArguments) -> tuple[list[_Item], list[dict], int]:
    if not args.input:
        raise ValueError("No input: pass --input with one or more release files (JSON lines or a JSON array).")
    media_root = args.media_root or os.path.dirname(os.path.abspath(args.input[0]))
    records, invalid = [], []
    count = 0
    for row, location, record in iter_release_records(args.input):
        if args.max_items is not None and count >= args.max_items:
            break
        count += 1
        try:
            if isinstance(record, RecordValidationError):
                raise record
            records.append((row, validate_record(record, row, location=location)))
        except RecordValidationError as error:
            invalid.append(
                {
                    "index": row,
                    "key": f"row:{row}",
                    "problem_id": record.get("problem_id") if isinstance(record, dict) else None,
                    "path": record.get("path") if isinstance(record, dict) else None,
                    "stage": "input",
                    "reason": "input.invalid_record",
                    "detail": str(error),
                }
            )
    keys = _item_keys([record for _, record in records])
    items = [
        _Item(key, row, record, resolve_media_path(record["path"], media_root))
        for key, (row, record) in zip(keys, records, strict=True)
    ]
    return items, invalid, count


def run_curation(
    args: CurationArguments,
    *,
    describe_backend: ChatBackend | None = None,
    reason_backend: ChatBackend | None = None,
    revise_backend: ChatBackend | None = None,
    semantic_reward: Callable | None = None,
) -> dict:
    """Curates `args.input` into CoT records in `args.output_dir`, resuming from what the folder already holds.

    Args:
        args: the run's `CurationArguments`.
        describe_backend, reason_backend, revise_backend: backends to use instead of building them from `args`
            (any `ChatBackend`: a client of your own, a scripted fake in tests).
        semantic_reward: the semantic-consistency reward of the filter (e.g. one built with a local SigLIP by
            `get_semantic_consistency_reward(model=..., processor=...)`); built from `args.semantic_model` on first
            use when None (only free-form items need it).

    Returns:
        The summary (also written to `summary.json`): `items_in`, `kept`, `rejected` per reason, `unfinished`, and
        per stage the units in, ok, rejected per reason, unfinished, requests and tokens.

    Raises:
        ValueError: no input, no model for a stage, or `output_dir` holds results made with other settings.
        CurationAborted: a fatal backend error (authentication, unknown model), or `max_consecutive_failures`
            failures in a row. Everything finished before is saved; rerun to continue.
        RuntimeError: another run holds `output_dir`.

    Example:
        >>> args = CurationArguments(input=["qa.jsonl"], model="Qwen/Qwen2.5-VL-7B-Instruct")
        >>> summary = run_curation(args)  # doctest: +SKIP
    """
    _description_validator()  # fail before any request when jsonschema is missing
    items, invalid, items_in = _load_items(args)
    given = {"describe": describe_backend, "reason": reason_backend, "revise": revise_backend}
    cache: dict = {}
    backends = {stage: given[stage] or build_backend(args, stage, cache) for stage in MODEL_STAGES}
    os.makedirs(args.output_dir, exist_ok=True)
    with output_dir_lock(args.output_dir, "videorft curate"):  # two runs would write units twice
        return _Curation(args, backends, semantic_reward).run(items, invalid, items_in)
