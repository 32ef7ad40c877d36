"""Deterministic offline test kit: tiny vision-language models, a tiny SigLIP, real test videos, records, and
stand-ins for the curation backends.

Everything here is built from configs and written to disk by the caller's own process: no download, no Hub access,
no optional dependency (no vLLM). Use it in this package's tests, in your own tests, in the demo and in benchmarks.

- `build_tiny_vlm(family)` returns `(model, processor)` for `"qwen2_vl"`, `"qwen2_5_vl"` or `"qwen3_vl"`: a model of
  a few hundred thousand random, seeded parameters and the family's real processor class (real image and video
  processors, the family's chat template, a byte-level `Qwen2Tokenizer` with the Qwen special token layout plus
  `<think>`, `</think>`, `<answer>`, `</answer>`). `save_tiny_vlm(family, path)` writes it for `from_pretrained`.
- `build_tiny_siglip()` / `save_tiny_siglip(path)`: a tiny `SiglipModel` with a real `SiglipProcessor`.
- `write_test_video(path, ...)` writes a real H.264 mp4 whose frames carry their own index in large solid blocks;
  `decode_frame_index(frame)` reads it back (after any resize), so a test can tell exactly which frames a loader
  sampled and whether they are upright (`pattern="footage"` adds a panning texture and sensor noise so that
  decoding costs about what real footage costs, for benchmarks). `write_test_image`, `write_truncated_video` and
  `write_non_video_file` make the inputs of error-path tests.
- `make_record(...)` writes one record of the release schema; `write_video_questions(root, ...)` writes videos and
  questions about each.
- `videorft_hf.testing.curation_backends` (imported from there, as it builds on `videorft_hf.curation`):
  `ScriptedChatBackend`, `serve_chat_backend` (a loopback OpenAI-compatible server) and `serve_transformers_model`,
  for tests and benchmarks of the curation pipeline.

Modules: `models` (tokenizer, processors, tiny VLMs, text LM, SigLIP), `media` (self-checking frames, videos, images,
broken files), `records`, `curation_backends`.

Example:
    ```python
    import av
    from transformers.video_utils import VideoMetadata
    from videorft_hf.testing import build_tiny_vlm, decode_frame_index, make_index_frames, write_test_video

    path = write_test_video("clip.mp4", num_frames=8, fps=4.0, width=56, height=56)
    with av.open(str(path)) as container:
        assert [decode_frame_index(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)] == list(range(8))

    model, processor = build_tiny_vlm("qwen2_5_vl")
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    frames = make_index_frames(4, 56, 56)  # what a loader returns after sampling frames 0, 2, 4, 6 of the clip
    metadata = VideoMetadata(total_num_frames=8, fps=4.0, frames_indices=[0, 2, 4, 6], width=56, height=56)
    inputs = processor(
        text=[text], videos=[frames], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt"
    )
    assert inputs["second_per_grid_ts"].tolist() == [1.0]  # temporal_patch_size 2 / sampled fps 2.0
    logits = model(**inputs).logits
    ```

How transformers 5.24 processors take decoded frames (verified by `tests/test_testing.py`):

- Pass frames as a `(T, H, W, 3)` uint8 array per video together with
  `video_metadata=[VideoMetadata(total_num_frames=N, fps=source_fps, frames_indices=[...], ...)]` and
  `do_sample_frames=False`. The Qwen2.5-VL processor then returns
  `second_per_grid_ts = temporal_patch_size / metadata.sampled_fps`, where
  `sampled_fps = len(frames_indices) / total_num_frames * fps`; Qwen3-VL writes `<t seconds>` before each
  temporal patch, with `t` the mean of `frames_indices[i] / fps` over the patch's frames. Do not pass `fps=`: it is
  the *sampling* rate for the processor's own frame sampler, not the source rate, and it is ignored when
  `do_sample_frames=False`.
- Without `video_metadata` both silently fall back to 24 fps (Qwen2.5-VL: `second_per_grid_ts = 2 / 24`,
  Qwen3-VL: timestamps from `fps=24` with a one-time warning). With metadata but `fps=None`, the same.
- `do_sample_frames=False` is required for Qwen3-VL: its video processor samples by default (`fps=2`) and would
  index the already-sampled array with indices computed for the whole source video. Qwen2-VL's default is `False`.
- Video sizes: Qwen2-VL / Qwen2.5-VL bound pixels *per frame* (`size["shortest_edge"]` / `["longest_edge"]`,
  factor `patch_size * merge_size = 28`); Qwen3-VL bounds pixels of the *whole clip* (`t * h * w`) and its factor is
  32 (`patch_size` 16). The tiny processors keep the real patch sizes and widen the pixel bounds so that frames whose
  sides are multiples of the factor are never resized again; real checkpoints have narrower bounds.
- The models need `mm_token_type_ids` (returned by the processor) whenever pixel inputs are passed: keep it in
  batches. Video processors import torchvision; none of this needs torchcodec or FFmpeg on the system.
- Chat templates render `{"type": "video"}` as `<|vision_start|><|video_pad|><|vision_end|>` and
  `{"type": "image"}` as `<|vision_start|><|image_pad|><|vision_end|>`; `apply_chat_template(..., tokenize=False)`
  needs no media. Qwen3-VL's processor expands `<|video_pad|>` into per-frame
  `<t seconds><|vision_start|><|video_pad|>...<|vision_end|>` groups inside the template's outer pair.
"""

from .media import (
    MAX_FRAME_INDEX,
    decode_frame_index,
    encode_frame_index,
    make_index_frames,
    write_non_video_file,
    write_test_image,
    write_test_video,
    write_truncated_video,
)
from .models import (
    QWEN2_VL_CHAT_TEMPLATE,
    QWEN3_VL_CHAT_TEMPLATE,
    REASONING_TOKENS,
    SIGLIP_MAX_LENGTH,
    TINY_VLM_FAMILIES,
    build_tiny_processor,
    build_tiny_qwen2_5_vl,
    build_tiny_qwen2_vl,
    build_tiny_qwen3_vl,
    build_tiny_siglip,
    build_tiny_text_lm,
    build_tiny_tokenizer,
    build_tiny_vlm,
    build_tiny_vlm_config,
    save_tiny_siglip,
    save_tiny_vlm,
)
from .records import (
    make_record,
    write_video_questions,
)

__all__ = [
    "TINY_VLM_FAMILIES",
    "REASONING_TOKENS",
    "build_tiny_tokenizer",
    "build_tiny_processor",
    "build_tiny_vlm_config",
    "build_tiny_vlm",
    "build_tiny_qwen2_vl",
    "build_tiny_qwen2_5_vl",
    "build_tiny_qwen3_vl",
    "save_tiny_vlm",
    "build_tiny_text_lm",
    "build_tiny_siglip",
    "save_tiny_siglip",
    "encode_frame_index",
    "decode_frame_index",
    "make_index_frames",
    "write_test_video",
    "write_test_image",
    "write_truncated_video",
    "write_non_video_file",
    "MAX_FRAME_INDEX",
    "QWEN2_VL_CHAT_TEMPLATE",
    "QWEN3_VL_CHAT_TEMPLATE",
    "SIGLIP_MAX_LENGTH",
    "make_record",
    "write_video_questions",
]
