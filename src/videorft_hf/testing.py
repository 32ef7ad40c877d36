"""Deterministic offline test kit: tiny vision-language models, a tiny SigLIP and real test videos.

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

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

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
]

TINY_VLM_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

# Same relative order as the Qwen2/2.5/3-VL vocabularies (151643 + i there, 256 + i here).
_QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Plain (non-special) added tokens: they survive `decode(..., skip_special_tokens=True)`, as format rewards need.
REASONING_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
_TINY_VOCAB_SIZE = 320  # > len(tokenizer) like the real checkpoints, whose embeddings are padded past the vocabulary

# The Qwen2-VL / Qwen2.5-VL instruct chat template, verbatim.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The Qwen3-VL instruct chat template without its tool-calling branches: no default system prompt, list contents
# allowed in every role.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].content is string %}{{- messages[0].content }}"
    "{%- else %}{%- for content in messages[0].content %}{%- if 'text' in content %}{{- content.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- set image_count = namespace(value=0) %}"
    "{%- set video_count = namespace(value=0) %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}"
    "{%- else %}{%- for content in message.content %}"
    "{%- if content.type == 'image' or 'image' in content or 'image_url' in content %}"
    "{%- set image_count.value = image_count.value + 1 %}"
    "{%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif content.type == 'video' or 'video' in content %}"
    "{%- set video_count.value = video_count.value + 1 %}"
    "{%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in content %}{{- content.text }}"
    "{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}"
    "{%- else %}{%- for content in message.content %}{%- if 'text' in content %}{{- content.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# The real patch sizes: 14 for Qwen2/2.5-VL (resize factor 28), 16 for Qwen3-VL (resize factor 32). A tiny Qwen3-VL
# with patch 14 would hide resize bugs that the real one has.
_PATCH_SIZE = {"qwen2_vl": 14, "qwen2_5_vl": 14, "qwen3_vl": 16}


def _check_family(family: str) -> None:
    if family not in TINY_VLM_FAMILIES:
        raise ValueError(f"Unknown tiny VLM family {family!r}; choose one of {', '.join(TINY_VLM_FAMILIES)}.")


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer and processors
# ----------------------------------------------------------------------------------------------------------------


def _byte_level_vocab() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_to_char = bytes_to_unicode()
    vocab = {byte_to_char[b]: b for b in range(256)}
    for offset, token in enumerate(_QWEN_SPECIAL_TOKENS + REASONING_TOKENS):
        vocab[token] = 256 + offset
    return vocab


def _train_merges(corpus: Sequence[str], num_merges: int) -> list[tuple[str, str]]:
    """Byte-level BPE merges learned from `corpus` (in the `bytes_to_unicode` alphabet of Qwen's tokenizer)."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=256 + num_merges,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]


def build_tiny_tokenizer(
    family: str = "qwen2_vl", corpus: Sequence[str] | None = None, num_merges: int = 768
) -> PreTrainedTokenizerBase:
    """Build a byte-level `Qwen2Tokenizer` that round-trips any UTF-8 text: no merges, or BPE merges learned from
    `corpus` (so that long fixed prompts cost tens of tokens instead of one token per character).

    Ids 0-255 are the bytes, then the Qwen special tokens in their real order (`<|endoftext|>` = 256,
    `<|im_start|>` = 257, `<|im_end|>` = 258, ..., `<|vision_start|>` = 265, `<|vision_end|>` = 266,
    `<|image_pad|>` = 268, `<|video_pad|>` = 269), then `<think>`, `</think>`, `<answer>`, `</answer>` as plain added
    tokens (kept by `skip_special_tokens=True`). EOS is `<|im_end|>` and padding `<|endoftext|>`, as in the instruct
    checkpoints. The family's chat template is attached.

    With `corpus`, the merged tokens take the ids after `</answer>`, in merge order.

    Args:
        family: One of `TINY_VLM_FAMILIES`; selects the chat template.
        corpus: Texts to learn BPE merges from (`None`: no merges).
        num_merges: Most merges learned from `corpus`.

    Returns:
        A `transformers.Qwen2Tokenizer`.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    _check_family(family)
    vocab = _byte_level_vocab()
    merges = _train_merges(corpus, num_merges) if corpus else []
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        extra_special_tokens=[t for t in _QWEN_SPECIAL_TOKENS if t not in ("<|im_end|>", "<|endoftext|>")],
        model_max_length=32768,
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TOKENS])
    tokenizer.chat_template = QWEN3_VL_CHAT_TEMPLATE if family == "qwen3_vl" else QWEN2_VL_CHAT_TEMPLATE
    return tokenizer


def build_tiny_processor(family: str, tokenizer_corpus: Sequence[str] | None = None) -> ProcessorMixin:
    """Build the family's real processor class around `build_tiny_tokenizer(family)`.

    Qwen2-VL and Qwen2.5-VL use `Qwen2VLImageProcessor` + `Qwen2VLVideoProcessor` (patch 14, resize factor 28);
    Qwen3-VL uses `Qwen2VLImageProcessor` + `Qwen3VLVideoProcessor` (patch 16, resize factor 32), each with the
    checkpoint's mean/std. Pixel bounds are wider than the checkpoints' so that small test frames whose sides are
    multiples of the factor reach the model unchanged: per frame 4 to 768 merged patches for Qwen2/2.5-VL, per clip
    `4 * 32 * 32` to `24576 * 32 * 32` pixels for Qwen3-VL. `cap_pixels_per_frame=False` is set explicitly, which
    keeps the un-capped behaviour and silences the processor's deprecation warning.

    Args:
        family: One of `TINY_VLM_FAMILIES`.
        tokenizer_corpus: Texts to learn the tokenizer's BPE merges from (see `build_tiny_tokenizer`).

    Returns:
        A `Qwen2VLProcessor`, `Qwen2_5_VLProcessor` or `Qwen3VLProcessor`.
    """
    from transformers import (
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    _check_family(family)
    tokenizer = build_tiny_tokenizer(family, corpus=tokenizer_corpus)
    patch = _PATCH_SIZE[family]
    factor = patch * 2
    common = {"patch_size": patch, "temporal_patch_size": 2, "merge_size": 2}
    if family == "qwen3_vl":
        half = [0.5, 0.5, 0.5]
        image_processor = Qwen2VLImageProcessor(
            size={"shortest_edge": 4 * factor * factor, "longest_edge": 16384 * factor * factor},
            image_mean=half,
            image_std=half,
            **common,
        )
        video_processor = Qwen3VLVideoProcessor(
            size={"shortest_edge": 4 * factor * factor, "longest_edge": 24576 * factor * factor},
            image_mean=half,
            image_std=half,
            fps=2,
            min_frames=4,
            max_frames=768,
            do_sample_frames=True,
            cap_pixels_per_frame=False,
            **common,
        )
        return Qwen3VLProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            chat_template=QWEN3_VL_CHAT_TEMPLATE,
        )
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": 4 * factor * factor, "longest_edge": 1280 * factor * factor}, **common
    )
    video_processor = Qwen2VLVideoProcessor(
        size={"shortest_edge": 4 * factor * factor, "longest_edge": 768 * factor * factor},
        cap_pixels_per_frame=False,
        **common,
    )
    processor_class = Qwen2VLProcessor if family == "qwen2_vl" else Qwen2_5_VLProcessor
    return processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )


# ----------------------------------------------------------------------------------------------------------------
# Tiny vision-language models
# ----------------------------------------------------------------------------------------------------------------


def build_tiny_vlm_config(
    family: str,
    vocab_size: int = _TINY_VOCAB_SIZE,
    *,
    text_hidden_size: int = 64,
    text_layers: int = 2,
    vision_width: int = 32,
    vision_depth: int = 2,
    text_head_dim: int = 16,
) -> PreTrainedConfig:
    """Build the tiny model config of a family, with token ids matching `build_tiny_tokenizer`.

    Text: hidden 64, 2 layers, 4 heads (2 key/value heads), head dim 16, M-RoPE sections summing to half the head
    dim in the family's proportions (temporal 1/8 of the head dim for Qwen2/2.5-VL, 1/4 for Qwen3-VL).
    Vision: width 32, depth 2, 2 heads, `spatial_merge_size` 2, `temporal_patch_size` 2 and the family's real
    `patch_size` (14, or 16 for Qwen3-VL). Qwen2.5-VL keeps one windowed and one full-attention block; Qwen3-VL has
    one deepstack layer and a 16 x 16 position-embedding grid.

    Args:
        family: One of `TINY_VLM_FAMILIES`.
        vocab_size: Rows of the embedding (at least the tokenizer's length).
        text_hidden_size: Text hidden size (default 64; a multiple of 16: 16 per attention head, intermediate 2x).
        text_layers: Text decoder layers (default 2).
        vision_width: Vision tower width (default 32; a multiple of 16: 16 per head, intermediate 2x).
        vision_depth: Vision blocks (default 2; Qwen2.5-VL's last one uses full attention).
        text_head_dim: Size of a text attention head (default 16; a multiple of 16 that divides `text_hidden_size`):
            attention kernels that take only some head sizes (vLLM's CPU attention: 32, 64, 80, ...) need 32 or 64.

    Returns:
        A `Qwen2VLConfig`, `Qwen2_5_VLConfig` or `Qwen3VLConfig`.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig

    _check_family(family)
    if text_head_dim % 16 or text_hidden_size % text_head_dim:
        raise ValueError(
            f"text_head_dim must be a multiple of 16 that divides text_hidden_size ({text_hidden_size}), got "
            f"{text_head_dim}."
        )
    heads = text_hidden_size // text_head_dim
    vocab = _byte_level_vocab()
    token_ids = {
        "image_token_id": vocab["<|image_pad|>"],
        "video_token_id": vocab["<|video_pad|>"],
        "vision_start_token_id": vocab["<|vision_start|>"],
        "vision_end_token_id": vocab["<|vision_end|>"],
    }
    text = {
        "vocab_size": vocab_size,
        "hidden_size": text_hidden_size,
        "intermediate_size": 2 * text_hidden_size,
        "num_hidden_layers": text_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 2),
        "max_position_embeddings": 4096,
        "bos_token_id": vocab["<|endoftext|>"],
        "eos_token_id": vocab["<|im_end|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }
    vision = {
        "depth": vision_depth, "num_heads": vision_width // 16, "patch_size": _PATCH_SIZE[family], "spatial_merge_size": 2
    }
    vision["temporal_patch_size"] = 2
    # M-RoPE sections (temporal, height, width) cover half the head dim, in the proportions of the real checkpoints
    # (Qwen2/2.5-VL: 16, 24, 24 of 64; Qwen3-VL: 24, 20, 20 of 64, here 1/4 temporal).
    temporal = text_head_dim // (4 if family == "qwen3_vl" else 8)
    spatial = (text_head_dim // 2 - temporal) // 2
    mrope_section = [temporal, spatial, spatial]
    if family == "qwen2_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope_section}
        vision.update(embed_dim=vision_width, hidden_size=text_hidden_size, mlp_ratio=2)
        return Qwen2VLConfig(text_config=text, vision_config=vision, **token_ids)
    if family == "qwen2_5_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope_section}
        vision.update(
            hidden_size=vision_width,
            intermediate_size=2 * vision_width,
            out_hidden_size=text_hidden_size,
            window_size=112,
            fullatt_block_indexes=[vision_depth - 1],
            tokens_per_second=2,
        )
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **token_ids)
    text["head_dim"] = text_head_dim
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 5000000.0,
        "mrope_section": mrope_section,
        "mrope_interleaved": True,
    }
    vision.update(
        hidden_size=vision_width,
        intermediate_size=2 * vision_width,
        out_hidden_size=text_hidden_size,
        num_position_embeddings=256,
        deepstack_visual_indexes=[0],
    )
    return Qwen3VLConfig(text_config=text, vision_config=vision, **token_ids)


def build_tiny_vlm(
    family: str,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    tokenizer_corpus: Sequence[str] | None = None,
    **sizes: int,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Build a tiny, randomly initialised vision-language model of a family and its real processor.

    The weights depend only on `seed` (the global torch RNG is left untouched), so two calls with the same seed
    give identical models. About 0.2 M parameters; builds in well under a second on CPU.

    Args:
        family: `"qwen2_vl"`, `"qwen2_5_vl"` or `"qwen3_vl"`.
        seed: Seed of the weight initialisation.
        dtype: Parameter dtype; float32 when `None`.
        attn_implementation: Passed to the model constructor (`"sdpa"`, `"eager"`, ...); transformers' default
            when `None`.
        tokenizer_corpus: Texts to learn the tokenizer's BPE merges from (the demo uses its prompts and answers,
            which makes its sequences several times shorter); the embedding grows to fit.
        **sizes: `text_hidden_size`, `text_layers`, `vision_width`, `vision_depth`, `text_head_dim` of
            `build_tiny_vlm_config` (defaults: the sizes above).

    Returns:
        `(model, processor)`: a `*ForConditionalGeneration` in eval mode and the processor of
        `build_tiny_processor(family)`.

    Example:
        ```python
        model, processor = build_tiny_vlm("qwen2_vl", seed=0)
        ```
    """
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    processor = build_tiny_processor(family, tokenizer_corpus)
    vocab_size = max(_TINY_VOCAB_SIZE, -(-(len(processor.tokenizer) + 16) // 64) * 64)
    config = build_tiny_vlm_config(family, vocab_size=vocab_size, **sizes)
    kwargs = {"dtype": dtype or torch.float32}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, **kwargs)
    model.eval()
    tokenizer = processor.tokenizer
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tokenizer.pad_token_id,
    )
    return model, processor


def build_tiny_qwen2_vl(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Tiny `Qwen2VLForConditionalGeneration` and a real `Qwen2VLProcessor`; see `build_tiny_vlm`.

    Args:
        seed: Seed of the weight initialisation.

    Returns:
        `(model, processor)`.
    """
    return build_tiny_vlm("qwen2_vl", seed=seed)


def build_tiny_qwen2_5_vl(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Tiny `Qwen2_5_VLForConditionalGeneration` and a real `Qwen2_5_VLProcessor`; see `build_tiny_vlm`.

    Args:
        seed: Seed of the weight initialisation.

    Returns:
        `(model, processor)`.
    """
    return build_tiny_vlm("qwen2_5_vl", seed=seed)


def build_tiny_qwen3_vl(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Tiny `Qwen3VLForConditionalGeneration` and a real `Qwen3VLProcessor`; see `build_tiny_vlm`.

    Args:
        seed: Seed of the weight initialisation.

    Returns:
        `(model, processor)`.
    """
    return build_tiny_vlm("qwen3_vl", seed=seed)


def save_tiny_vlm(
    family: str, path: str | os.PathLike, seed: int = 0, tokenizer_corpus: Sequence[str] | None = None, **sizes: int
) -> Path:
    """Save a tiny model and its processor so that `from_pretrained(path)` works offline.

    Load it back with `AutoModelForImageTextToText.from_pretrained(path)` (or the family's class) and
    `AutoProcessor.from_pretrained(path)`; this is what CLI tests pass as a model path.

    Args:
        family: One of `TINY_VLM_FAMILIES`.
        path: Directory to write (created if missing).
        seed: Seed of the weight initialisation.
        tokenizer_corpus: Texts to learn the tokenizer's BPE merges from (see `build_tiny_vlm`).
        **sizes: model sizes of `build_tiny_vlm_config` (`text_hidden_size`, `text_layers`, `vision_width`,
            `vision_depth`, `text_head_dim`); the defaults when left out.

    Returns:
        The directory as a `Path`.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model, processor = build_tiny_vlm(family, seed=seed, tokenizer_corpus=tokenizer_corpus, **sizes)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Tiny SigLIP
# ----------------------------------------------------------------------------------------------------------------

_SIGLIP_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
SIGLIP_MAX_LENGTH = 64


def build_tiny_text_lm(seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Build a tiny text-only `Qwen2ForCausalLM` (hidden 16, 1 layer, tied embeddings) with the byte-level Qwen
    tokenizer of `build_tiny_tokenizer("qwen2_vl")`: the text model of stock-trl and text-checkpoint tests."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tiny_tokenizer("qwen2_vl")
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config), tokenizer


def _build_siglip_tokenizer():
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_to_char = bytes_to_unicode()
    vocab = {token: i for i, token in enumerate(_SIGLIP_SPECIAL_TOKENS)}
    for b in range(256):
        vocab[byte_to_char[b]] = len(_SIGLIP_SPECIAL_TOKENS) + b
    backend = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<unk>", fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    # Like SigLIP's sentencepiece tokenizer: every sequence ends with </s>.
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="</s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=SIGLIP_MAX_LENGTH,
        padding_side="right",
        # SigLIP was trained without an attention mask and its tokenizer returns none.
        model_input_names=["input_ids"],
    )


def build_tiny_siglip(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Build a tiny `SiglipModel` (text and vision towers) and a real `SiglipProcessor`.

    Text tower: hidden 32, 2 layers, 2 heads, 64 positions (SigLIP's text length); vision tower: 32 x 32 images,
    patch 8, hidden 32, 2 layers. The processor pairs a `SiglipImageProcessor` (resize to 32 x 32, mean/std 0.5)
    with a byte-level fast tokenizer (SigLIP's own tokenizer needs sentencepiece) whose `model_max_length` is 64 and
    which ends each text with `</s>` (= pad, id 1, as in SigLIP) and, like SigLIP's, returns no attention mask. As
    with the real model, call the processor with `padding="max_length", truncation=True`: SigLIP pools the last
    position, so texts must be padded to 64. In transformers 5.x `get_text_features` / `get_image_features` return
    a `BaseModelOutputWithPooling`; the embedding is its `pooler_output`.

    Args:
        seed: Seed of the weight initialisation (global torch RNG untouched).

    Returns:
        `(model, processor)`, the model in eval mode.

    Example:
        ```python
        model, processor = build_tiny_siglip()
        inputs = processor(text=["a cat"], padding="max_length", truncation=True, return_tensors="pt")
        embeddings = model.get_text_features(**inputs).pooler_output  # (1, 32)
        ```
    """
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    tokenizer = _build_siglip_tokenizer()
    config = SiglipConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": SIGLIP_MAX_LENGTH,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SiglipModel(config)
    model.eval()
    image_processor = SiglipImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]
    )
    return model, SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def save_tiny_siglip(path: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny SigLIP so that `AutoModel.from_pretrained(path)` / `AutoProcessor.from_pretrained(path)` work.

    Args:
        path: Directory to write (created if missing).
        seed: Seed of the weight initialisation.

    Returns:
        The directory as a `Path`.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model, processor = build_tiny_siglip(seed=seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Frames that carry their index
# ----------------------------------------------------------------------------------------------------------------

# A 4 x 4 grid of solid cells. Three corners are fixed colour markers (red top-left, green top-right, blue
# bottom-left), so a rotated or mirrored frame is detected instead of misread; the 13 other cells are the bits of the
# frame index (white = 1, black = 0), least significant first in row-major order.
_GRID = 4
_MARKERS = {(0, 0): (255, 0, 0), (0, _GRID - 1): (0, 255, 0), (_GRID - 1, 0): (0, 0, 255)}
_BIT_CELLS = [(r, c) for r in range(_GRID) for c in range(_GRID) if (r, c) not in _MARKERS]
MAX_FRAME_INDEX = 2 ** len(_BIT_CELLS) - 1


def _cell_bounds(size: int, i: int) -> tuple[int, int]:
    return (i * size) // _GRID, ((i + 1) * size) // _GRID


def encode_frame_index(index: int, height: int, width: int) -> np.ndarray:
    """Draw the frame whose solid blocks encode `index`.

    Args:
        index: Frame index, `0 <= index <= MAX_FRAME_INDEX` (8191).
        height: Frame height in pixels (at least 8).
        width: Frame width in pixels (at least 8).

    Returns:
        A `(height, width, 3)` uint8 RGB array.
    """
    if not 0 <= index <= MAX_FRAME_INDEX:
        raise ValueError(f"index must be in [0, {MAX_FRAME_INDEX}], got {index}.")
    if height < 2 * _GRID or width < 2 * _GRID:
        raise ValueError(f"frames must be at least {2 * _GRID} x {2 * _GRID} pixels, got {height} x {width}.")
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    for (r, c), colour in _MARKERS.items():
        (y0, y1), (x0, x1) = _cell_bounds(height, r), _cell_bounds(width, c)
        frame[y0:y1, x0:x1] = colour
    for bit, (r, c) in enumerate(_BIT_CELLS):
        if index >> bit & 1:
            (y0, y1), (x0, x1) = _cell_bounds(height, r), _cell_bounds(width, c)
            frame[y0:y1, x0:x1] = 255
    return frame


def decode_frame_index(frame: np.ndarray) -> int:
    """Recover the index drawn by `encode_frame_index` from an RGB frame, at any size.

    Each cell is read as the mean of its central half, so codec noise at block edges and resizing (cells are located
    relative to the frame size) do not matter.

    Args:
        frame: `(H, W, 3)` RGB array, uint8 in [0, 255] (or float in [0, 1]), `H, W >= 8`.

    Returns:
        The frame index.

    Raises:
        ValueError: The corner markers are not where an upright test frame has them (the frame is rotated, mirrored,
            channel-swapped (e.g. BGR) or not a test frame).
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB frame, got shape {frame.shape}.")
    values = frame.astype(np.float64)
    if not np.issubdtype(frame.dtype, np.integer) and values.max() <= 1.0:
        values = values * 255.0
    height, width = frame.shape[:2]

    def cell_mean(r: int, c: int) -> np.ndarray:
        (y0, y1), (x0, x1) = _cell_bounds(height, r), _cell_bounds(width, c)
        dy, dx = (y1 - y0) // 4, (x1 - x0) // 4
        return values[y0 + dy : max(y1 - dy, y0 + dy + 1), x0 + dx : max(x1 - dx, x0 + dx + 1)].mean(axis=(0, 1))

    for (r, c), colour in _MARKERS.items():
        mean = cell_mean(r, c)
        if not all((m > 128) == (ref > 128) for m, ref in zip(mean, colour, strict=True)):
            raise ValueError(
                f"cell ({r}, {c}) has mean RGB {np.round(mean).astype(int).tolist()}, expected about {list(colour)}: "
                "not an upright RGB test frame (rotated, mirrored, BGR, or not written by videorft_hf.testing)."
            )
    index = 0
    for bit, (r, c) in enumerate(_BIT_CELLS):
        if cell_mean(r, c).mean() > 128:
            index |= 1 << bit
    return index


def make_index_frames(num_frames: int, height: int, width: int, start: int = 0, step: int = 1) -> np.ndarray:
    """Stack the index frames `start, start + step, ...` without any codec, like frames a loader returns.

    Args:
        num_frames: Number of frames.
        height: Frame height.
        width: Frame width.
        start: Index of the first frame.
        step: Index increment between frames.

    Returns:
        A `(num_frames, height, width, 3)` uint8 array.
    """
    return np.stack([encode_frame_index(start + i * step, height, width) for i in range(num_frames)])


def _noise_texture(index: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(index)
    return rng.integers(-40, 41, size=(height, width, 3), dtype=np.int16)


# pattern="footage" (what it shows and what it costs to decode: write_test_video's docstring).
_FOOTAGE_LEVELS = (40, 216)  # what black and white index cells become; decode_frame_index thresholds at 128
_FOOTAGE_TEXTURE_STD = 20.0  # grey levels
_FOOTAGE_TEXTURE_LIMIT = 64  # texture clipped to +-64: every cell mean stays >= 23 levels on its side of 128
_FOOTAGE_SPECTRUM_SLOPE = 1.5  # amplitude ~ 1 / frequency ** slope (natural images: about 1, softer above)
_FOOTAGE_PAN = (1, 2)  # pixels per frame (down, right) while the camera moves: a slow diagonal pan
_FOOTAGE_PAN_CYCLE = (60, 60)  # frames moving, then frames held still, repeated (2 s each at 30 fps)
_FOOTAGE_SENSOR_NOISE = 1  # per-frame luma noise, uniform in [-1, 1] levels
_FOOTAGE_SEED = 20240


def _footage_texture(height: int, width: int) -> np.ndarray:
    """A seeded `(height, width, 3)` int16 texture, periodic in both directions (so it pans without a seam): filtered
    Gaussian noise with amplitude spectrum `1 / f ** _FOOTAGE_SPECTRUM_SLOPE`, mostly luma (80%) with some chroma."""
    rng = np.random.default_rng(_FOOTAGE_SEED)
    white = rng.standard_normal((height, width, 3))
    radius = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :])
    radius[0, 0] = 1.0
    spectrum = np.fft.rfft2(white, axes=(0, 1)) / radius[..., None] ** _FOOTAGE_SPECTRUM_SLOPE
    spectrum[0, 0] = 0.0
    texture = np.fft.irfft2(spectrum, s=(height, width), axes=(0, 1))
    luma = texture.mean(axis=2, keepdims=True)
    texture = 0.8 * luma / luma.std() + 0.2 * texture / texture.std()
    texture *= _FOOTAGE_TEXTURE_STD / texture.std()
    limit = _FOOTAGE_TEXTURE_LIMIT
    return np.clip(np.round(texture), -limit, limit).astype(np.int16)


def _footage_frame(index: int, height: int, width: int, texture: np.ndarray) -> np.ndarray:
    low, high = _FOOTAGE_LEVELS
    blocks = encode_frame_index(index, height, width).astype(np.int32) * (high - low) // 255 + low
    moving, held = _FOOTAGE_PAN_CYCLE
    steps = index // (moving + held) * moving + min(index % (moving + held), moving)
    dy, dx = _FOOTAGE_PAN
    panned = np.roll(texture, (steps * dy % height, steps * dx % width), axis=(0, 1))
    noise = np.random.default_rng((_FOOTAGE_SEED, index)).integers(
        -_FOOTAGE_SENSOR_NOISE, _FOOTAGE_SENSOR_NOISE + 1, size=(height, width, 1), dtype=np.int16
    )
    return np.clip(blocks + panned + noise, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------


def write_test_video(
    path: str | os.PathLike,
    num_frames: int = 16,
    fps: float | Fraction = 8.0,
    width: int = 112,
    height: int = 112,
    codec: str = "libx264",
    gop: int | None = None,
    rotation: int | None = None,
    pattern: str = "index",
    faststart: bool = False,
) -> Path:
    """Write a real video file (H.264 in mp4 by default, yuv420p) whose frame `i` carries index `i`.

    The container is chosen from the suffix of `path` (`.mp4`, `.mkv`, `.mov`, `.avi`, ...). Frame `i` has
    presentation time `i / fps`. With libx264 the bytes are reproducible for the same arguments.

    Args:
        path: File to write; parent directories are created.
        num_frames: Number of frames, at most `MAX_FRAME_INDEX + 1`.
        fps: Frame rate; floats are turned into fractions (29.97 -> 2997/100).
        width: Displayed width in pixels (even, since yuv420p halves the chroma planes).
        height: Displayed height in pixels (even).
        codec: FFmpeg encoder name (`"libx264"`, `"mpeg4"`, ...).
        gop: Keyframe interval in frames: with libx264 a keyframe lands exactly every `gop` frames (scene-cut
            detection off). Encoder default when `None`.
        rotation: Display rotation in degrees counter-clockwise, one of 0, 90, 180, 270 (or -90), the convention of
            `av.VideoFrame.rotation`, which reads 270 back as -90. The stored frames are the upright frames rotated
            the other way (and are `height x width` for 90/270), so a reader that applies the display matrix gets
            upright `width x height` frames: `np.rot90(stored, k=rotation // 90)`. A phone's portrait video
            (`rotate=90` tag) has `rotation=-90`.
        pattern: What the frames show besides their index; every pattern decodes with `decode_frame_index`.
            `"index"`: the solid index blocks of `encode_frame_index` only; nearly free to decode (60 s at 640x360:
            about 0.15 s wall), far cheaper than real video. `"footage"`: the same blocks at reduced contrast
            (levels 40 and 216) under a fixed seeded texture with a natural-image-like spectrum, which a camera pans
            across (2 px right and 1 px down per frame for 2 s, then still for 2 s, repeated: motion compensation
            works as on real video) plus +-1 level of per-frame sensor noise; bitrate and decode cost resemble real
            camera footage (60 s 640x360 at 30 fps, `gop=240`: 6.3 MB, 0.84 Mbit/s, a full sequential PyAV decode
            about 0.75 s wall / 1.1 CPU seconds on 2 cores). `"noise"`: the solid blocks plus independent per-frame
            noise of +-40 levels, a worst case costing about six times real footage to decode (same clip: 92 MB,
            12 Mbit/s, about 4.2 s wall / 7 CPU seconds).
        faststart: Put the mp4 index (moov atom) before the media data. Then a truncated copy still opens and
            fails, or stops early, in the middle of the stream instead of failing to open.

    Returns:
        `path` as a `Path`.
    """
    import av

    if pattern not in ("index", "footage", "noise"):
        raise ValueError(f"pattern must be 'index', 'footage' or 'noise', got {pattern!r}.")
    if not 1 <= num_frames <= MAX_FRAME_INDEX + 1:
        raise ValueError(f"num_frames must be in [1, {MAX_FRAME_INDEX + 1}], got {num_frames}.")
    if width % 2 or height % 2:
        raise ValueError(f"width and height must be even for yuv420p, got {width} x {height}.")
    quarter_turns = 0
    if rotation:
        if rotation % 90:
            raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}.")
        quarter_turns = (rotation // 90) % 4
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    coded_w, coded_h = (height, width) if quarter_turns % 2 else (width, height)

    container_options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=container_options) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = coded_w, coded_h
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / rate
        options = {}
        if codec in ("libx264", "h264"):
            # Reproducible bytes: x264's output depends on its thread count (which follows the CPUs the process
            # may use), and its assembly macroblock-tree pass gave different bytes from run to run, so one thread
            # and no mbtree. "veryfast" keeps B-frames: decode order differs from presentation order, as in real
            # footage.
            x264_params = ["mbtree=0"]
            if gop is not None:
                x264_params.append(f"keyint={gop}:min-keyint={gop}:scenecut=0")
            options = {"preset": "veryfast", "crf": "18", "threads": "1", "x264-params": ":".join(x264_params)}
        if gop is not None:
            stream.codec_context.gop_size = gop
        stream.codec_context.options = options
        if quarter_turns:
            stream.set_display_rotation(quarter_turns * 90)
        texture = _footage_texture(height, width) if pattern == "footage" else None
        for i in range(num_frames):
            if pattern == "footage":
                image = _footage_frame(i, height, width, texture)
            else:
                image = encode_frame_index(i, height, width)
            if pattern == "noise":
                image = np.clip(image.astype(np.int16) + _noise_texture(i, height, width), 0, 255).astype(np.uint8)
            stored = np.ascontiguousarray(np.rot90(image, k=-quarter_turns))
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_test_image(
    path: str | os.PathLike,
    width: int = 112,
    height: int = 112,
    color: tuple[int, int, int] = (255, 0, 0),
    index: int | None = None,
) -> Path:
    """Write an RGB image file (format from the suffix: `.png`, `.jpg`, ...).

    Args:
        path: File to write; parent directories are created.
        width: Width in pixels.
        height: Height in pixels.
        color: Solid RGB colour, used when `index` is `None`.
        index: Draw the index frame of `encode_frame_index` instead of a solid colour.

    Returns:
        `path` as a `Path`.
    """
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if index is None:
        array = np.empty((height, width, 3), dtype=np.uint8)
        array[:] = np.asarray(color, dtype=np.uint8)
    else:
        array = encode_frame_index(index, height, width)
    Image.fromarray(array, mode="RGB").save(path)
    return path


def write_truncated_video(src: str | os.PathLike, dst: str | os.PathLike, keep_fraction: float = 0.5) -> Path:
    """Copy the first `keep_fraction` of a file's bytes, as an interrupted download or copy leaves it.

    With a default mp4 (index at the end) the copy cannot be opened at all; with `write_test_video(...,
    faststart=True)` it opens and breaks off in the middle of the stream.

    Args:
        src: Existing file.
        dst: File to write; parent directories are created.
        keep_fraction: Fraction of bytes kept, in (0, 1).

    Returns:
        `dst` as a `Path`.
    """
    if not 0.0 < keep_fraction < 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1), got {keep_fraction}.")
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    return dst


def write_non_video_file(path: str | os.PathLike, content: str | bytes = "this is not a video\n") -> Path:
    """Write a file that is not a video (whatever its suffix says), for error-path tests.

    Args:
        path: File to write, e.g. `"broken.mp4"`; parent directories are created.
        content: Text or bytes to write; `""` writes an empty file.

    Returns:
        `path` as a `Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------------------------


def make_record(
    problem_id: int,
    problem_type: str,
    solution: str,
    path: str,
    data_type: str = "video",
    options: list[str] | None = None,
    problem: str = "What happens?",
    data_source: str = "synthetic",
) -> dict:
    """One record in the release schema, `solution` wrapped in answer tags.

    `options` is left out of the record when `None` (it is optional in the release files).
    """
    record = {
        "problem_id": problem_id,
        "problem": problem,
        "data_type": data_type,
        "problem_type": problem_type,
        "solution": f"<answer>{solution}</answer>",
        "path": path,
        "data_source": data_source,
    }
    if options is not None:
        record["options"] = options
    return record


def write_video_questions(root: str | os.PathLike, num_videos: int, questions_per_video: int) -> list[dict]:
    """Writes `num_videos` 4 s 320x240 clips (`v<i>.mp4`) under `root` and returns yes/no questions about each, in
    the release schema (for benchmarks that measure per-video reuse)."""
    records = []
    for v in range(num_videos):
        write_test_video(Path(root) / f"v{v}.mp4", num_frames=120, fps=30.0, width=320, height=240)
        records += [
            make_record(
                v * questions_per_video + q, "multiple choice", "A", f"./v{v}.mp4", options=["A. yes", "B. no"],
                problem=f"Question {q} about video {v}?", data_source="bench",
            )
            for q in range(questions_per_video)
        ]
    return records
