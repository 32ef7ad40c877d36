"""Tiny models built from configs, offline: Qwen2-VL, Qwen2.5-VL and Qwen3-VL models with their real processor
classes and a byte-level tokenizer of the Qwen layout, a tiny Qwen2 language model, and a tiny SigLIP."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

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
