"""videorft_hf: the VideoRFT recipe (video CoT SFT, then GRPO with a semantic-consistency reward) for trl."""

__version__ = "0.1.0.dev0"

from . import _quiet  # noqa: F401  (first: it must run before anything imports peft)
from .cards import apply_videorft_tags, videorft_tags
from .collators import DataCollatorForVideoLanguageModeling, SampleTooLongError
from .configs import VideoGRPOConfig, VideoRFTScriptArguments, VideoSFTConfig
from .data import (
    DataFileNotFoundError,
    MediaPathError,
    MediaRootError,
    NoValidRecordsError,
    RecordValidationError,
    fetch_media,
    load_videorft_dataset,
    make_conversation,
)
from .evaluation import EvalArguments, load_metric, results_to_model_index, run_evaluation
from .frame_store import FrameStore, open_frame_store
from .internals import apply_position_rule
from .processing import VisionTokenMismatchError
from .prompts import DEFAULT_SYSTEM_PROMPT, QUESTION_TEMPLATE, TYPE_TEMPLATE, build_prompt_text
from .rewards import REWARD_FUNCS, accuracy_reward, format_reward, get_reward_funcs, get_semantic_consistency_reward
from .trainer import VideoGRPOTrainer
from .video import (
    FrameCache,
    VideoDecodeError,
    VideoSamplingConfig,
    load_image,
    load_video_frames,
)
from .vllm_media import VLLMPromptMismatchError


def __getattr__(name: str):
    """`push_model` and `push_dataset` import the publishing stage (`hub`) when first used, so training never does."""
    if name in ("push_model", "push_dataset"):
        from . import hub

        return getattr(hub, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
