"""videorft_hf: the VideoRFT recipe (video CoT SFT, then GRPO with a semantic-consistency reward) for trl.

The public names below are imported from their modules when first used (PEP 562), so `import videorft_hf` and
`videorft --help` do not import torch, transformers or trl; `from videorft_hf import VideoGRPOTrainer` imports what
that name needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _quiet  # noqa: F401  (first: it must run before anything imports peft)
from ._lazy import lazy_exports

__version__ = "0.1.0.dev0"

# public name -> the module (of this package) that defines it
_EXPORTS: dict[str, str] = {
    "apply_videorft_tags": "cards",
    "videorft_tags": "cards",
    "DataCollatorForVideoLanguageModeling": "collators",
    "SampleTooLongError": "collators",
    "VideoGRPOConfig": "configs",
    "VideoRFTScriptArguments": "configs",
    "VideoSFTConfig": "configs",
    "DataFileNotFoundError": "data",
    "MediaPathError": "data",
    "MediaRootError": "data",
    "NoValidRecordsError": "data",
    "RecordValidationError": "data",
    "fetch_media": "data",
    "load_videorft_dataset": "data",
    "make_conversation": "data",
    "EvalArguments": "evaluation",
    "load_metric": "evaluation",
    "results_to_model_index": "evaluation",
    "run_evaluation": "evaluation",
    "FrameStore": "frame_store",
    "apply_position_rule": "internals",
    "open_frame_store": "frame_store",
    "VisionTokenMismatchError": "processing",
    "DEFAULT_SYSTEM_PROMPT": "prompts",
    "QUESTION_TEMPLATE": "prompts",
    "TYPE_TEMPLATE": "prompts",
    "build_prompt_text": "prompts",
    "REWARD_FUNCS": "rewards",
    "accuracy_reward": "rewards",
    "format_reward": "rewards",
    "get_reward_funcs": "rewards",
    "get_semantic_consistency_reward": "rewards",
    "VideoGRPOTrainer": "trainer",
    "FrameCache": "video",
    "VideoDecodeError": "video",
    "VideoSamplingConfig": "video",
    "load_image": "video",
    "load_video_frames": "video",
    "VLLMPromptMismatchError": "vllm_media",
    # the publishing stage (`hub`): training never imports it
    "push_model": "hub",
    "push_dataset": "hub",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # what the names are, for type checkers and IDEs
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
    from .hub import push_dataset, push_model
    from .internals import apply_position_rule
    from .processing import VisionTokenMismatchError
    from .prompts import DEFAULT_SYSTEM_PROMPT, QUESTION_TEMPLATE, TYPE_TEMPLATE, build_prompt_text
    from .rewards import (
        REWARD_FUNCS,
        accuracy_reward,
        format_reward,
        get_reward_funcs,
        get_semantic_consistency_reward,
    )
    from .trainer import VideoGRPOTrainer
    from .video import FrameCache, VideoDecodeError, VideoSamplingConfig, load_image, load_video_frames
    from .vllm_media import VLLMPromptMismatchError


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
