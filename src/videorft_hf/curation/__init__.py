"""The CoT data engine of VideoRFT (`videorft curate`): describe, reason, revise, filter.

- `backends`: `ChatBackend` and its two implementations, `OpenAIChatBackend` (any OpenAI-compatible endpoint) and
  `TransformersChatBackend` (a local model in process).
- `arguments`: the stages, `CurationArguments`, and `build_backend` (each model stage's backend).
- `checks`: the description schema and the checks on model outputs (`parse_description`, `parse_cot`,
  `find_description_framing`).
- `units`: how a stage's units run in threads, their stage files (`read_stage_file`), `CurationAborted`.
- `stages`: what one unit of each stage does (`StageWork`).
- `pipeline`: `run_curation`, the stages in order over an output folder, and `format_summary`.

Stand-ins for tests and benchmarks (`ScriptedChatBackend`, `serve_chat_backend`, a loopback OpenAI-compatible server)
live in the test kit, `videorft_hf.testing.curation_backends`.

Example:
    ```python
    from videorft_hf.curation import CurationArguments, run_curation

    summary = run_curation(CurationArguments(input=["qa.jsonl"], media_root="/data", output_dir="curated",
                                             base_url="http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-VL-7B-Instruct"))
    ```
"""

from .arguments import CLOSED_FORM_TYPES, OPEN_ENDED_TYPES, STAGES, CurationArguments, build_backend
from .backends import (
    BackendError,
    ChatBackend,
    ChatResult,
    FatalBackendError,
    GenerationOptions,
    OpenAIChatBackend,
    TransformersChatBackend,
)
from .checks import DESCRIPTION_SCHEMA, find_description_framing, parse_cot, parse_description
from .pipeline import format_summary, run_curation
from .units import CurationAborted, read_stage_file

__all__ = [
    "CLOSED_FORM_TYPES",
    "DESCRIPTION_SCHEMA",
    "OPEN_ENDED_TYPES",
    "STAGES",
    "BackendError",
    "ChatBackend",
    "ChatResult",
    "CurationAborted",
    "CurationArguments",
    "FatalBackendError",
    "GenerationOptions",
    "OpenAIChatBackend",
    "TransformersChatBackend",
    "build_backend",
    "find_description_framing",
    "format_summary",
    "parse_cot",
    "parse_description",
    "read_stage_file",
    "run_curation",
]
