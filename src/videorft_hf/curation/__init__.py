"""The CoT data engine of VideoRFT (`videorft curate`): describe, reason, revise, filter.

- `pipeline`: `CurationArguments`, `run_curation`, the description schema, the output checks and the stage files.
- `backends`: `ChatBackend` and its two implementations, `OpenAIChatBackend` (any OpenAI-compatible endpoint) and
  `TransformersChatBackend` (a local model in process).

Stand-ins for tests and benchmarks (`ScriptedChatBackend`, `serve_chat_backend`, a loopback OpenAI-compatible server)
live in the test kit, `videorft_hf.testing.curation_backends`.

Example:
    ```python
    from videorft_hf.curation import CurationArguments, run_curation

    summary = run_curation(CurationArguments(input=["qa.jsonl"], media_root="/data", output_dir="curated",
                                             base_url="http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-VL-7B-Instruct"))
    ```
"""

from .backends import (
    BackendError,
    ChatBackend,
    ChatResult,
    FatalBackendError,
    GenerationOptions,
    OpenAIChatBackend,
    TransformersChatBackend,
)
from .pipeline import (
    CLOSED_FORM_TYPES,
    DESCRIPTION_SCHEMA,
    OPEN_ENDED_TYPES,
    STAGES,
    CurationAborted,
    CurationArguments,
    build_backend,
    find_description_framing,
    format_summary,
    parse_cot,
    parse_description,
    read_stage_file,
    run_curation,
)

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
