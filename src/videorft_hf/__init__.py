"""videorft_hf: the VideoRFT recipe (video CoT SFT, then GRPO with a semantic-consistency reward) for trl."""

__version__ = "0.1.0.dev0"

from .data import MediaPathError, RecordValidationError, fetch_media, load_videorft_dataset, make_conversation
from .prompts import DEFAULT_SYSTEM_PROMPT, QUESTION_TEMPLATE, TYPE_TEMPLATE, build_prompt_text
from .video import (
    FrameCache,
    VideoDecodeError,
    VideoSamplingConfig,
    load_image,
    load_video_frames,
)
