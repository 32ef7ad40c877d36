"""The generation backends of `videorft eval`: `TransformersGenerator` (`model.generate` or the package's rollout
engine) and `VLLMGenerator`, and the `EvalSample` each prepares and generates for. Any object with `processor`,
`model_config`, `prepare(sample)` and `generate(samples)` can stand in for them (`run_evaluation(args,
generator=...)`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..internals import apply_position_rule
from ..processing import RowMedia, check_vision_tokens, collate_vision, encode_prompt, mm_token_type_ids
from .arguments import resolve_generation_engine


@dataclass
class EvalSample:
    """One sample on its way through the run: its row, then its rendered prompt and decoded media, then the
    backend's inputs (`inputs`), or the decode `error` that replaces all of them."""

    benchmark: str
    key: str
    index: int
    row: dict
    text: str | None = None
    media: RowMedia | None = None
    inputs: Any = None
    error: str | None = None


class TransformersGenerator:
    """Batched generation on the model itself (CPU or GPU), inputs built by `videorft_hf.processing`.

    Prompts of a batch are left-padded; every sample's vision tensors are those the trainer would build for it. Image
    and video placeholder tokens are suppressed (a sampled placeholder would have no features), as in the trainer.
    Positions follow Qwen's M-RoPE rule (`videorft_hf.internals.apply_position_rule`), as in training.

    Two engines generate from the same generation config: `"transformers"` calls `model.generate`; `"compiled"` runs
    the package's rollout engine (`videorft_hf.rollout.RolloutEngine`: a static KV cache, and on CUDA a decode step
    compiled into a CUDA graph). The engine is built once, here, and serves every batch of the run: every batch
    (the last, shorter one included) runs at `batch_size` rows, so one compiled graph serves them all, recompiled only
    when a batch needs a longer cache than any before it.

    Args:
        model: a Qwen2-VL / Qwen2.5-VL / Qwen3-VL model.
        processor: its processor.
        max_new_tokens, temperature, top_p: decoding (temperature 0: greedy).
        seed: `torch.manual_seed(seed)` before every batch, so a batch's samples do not depend on earlier batches
            (a resumed run draws what an uninterrupted one draws).
        generation_engine: `"compiled"`, `"transformers"` or None (compiled when the model is on CUDA, else
            transformers; see `evaluation.arguments.resolve_generation_engine`).
        batch_size: the most samples per `generate` call (the compiled engine's row count; None: each batch's size
            rounded up to a power of two).
        compile: whether the compiled engine runs its decode step through `torch.compile` (default: on CUDA only;
            on CPU it runs eagerly, on its static cache).

    Raises:
        ValueError: an unknown `generation_engine`.
        UnsupportedGenerationError: the compiled engine with a model it does not run (attention other than sdpa or
            eager, sliding-window layers, a model family without Qwen's position rule).

    Example:
        >>> generator = TransformersGenerator(model, processor, max_new_tokens=1024, temperature=0.1, top_p=0.001)  # doctest: +SKIP
    """

    def __init__(
        self,
        model,
        processor,
        *,
        max_new_tokens=1024,
        temperature=0.1,
        top_p=0.001,
        seed=42,
        generation_engine: str | None = None,
        batch_size: int | None = None,
        compile: bool | None = None,
    ):
        from transformers import GenerationConfig

        self.model = apply_position_rule(model)
        self.processor = processor
        self.model_config = model.config
        self.seed = seed
        device = next(model.parameters()).device
        self.generation_engine = resolve_generation_engine(generation_engine, device)
        tokenizer = getattr(processor, "tokenizer", processor)
        model_generation = getattr(model, "generation_config", None)
        eos = getattr(model_generation, "eos_token_id", None) or tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = eos[0] if isinstance(eos, list) else eos
        self.pad_token_id = pad
        self.image_token_id = getattr(self.model_config, "image_token_id", None)
        self.video_token_id = getattr(self.model_config, "video_token_id", None)
        sampling = temperature > 0
        # Every sampling field set explicitly: None fields would be filled from the checkpoint's generation_config.json
        # (Qwen ships top_k=1 and repetition_penalty=1.05), which the paper's vLLM evaluation did not apply.
        self.generation_config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else 1.0,
            top_p=top_p if sampling else 1.0,
            top_k=0 if sampling else None,  # greedy: unused, and transformers warns about any value it is given
            repetition_penalty=1.0,
            num_beams=1,
            eos_token_id=eos,
            pad_token_id=pad,
            bos_token_id=getattr(model_generation, "bos_token_id", None),
            suppress_tokens=[t for t in (self.image_token_id, self.video_token_id) if t is not None] or None,
        )
        self.engine = None
        if self.generation_engine == "compiled":
            from ..rollout import RolloutEngine, resolve_generation_config

            resolve_generation_config(self.generation_config, model)  # a setting it does not reproduce fails now
            self.engine = RolloutEngine(
                model,
                compile=device.type == "cuda" if compile is None else compile,
                row_buckets=(batch_size,) if batch_size else None,
                # Prompt widths vary from batch to batch; a coarse cache length lets one cache (and graph) serve most.
                length_multiple=512,
            )

    def prepare(self, sample: EvalSample) -> None:
        """Encodes a sample with the processor (sets `sample.inputs = (input_ids, vision tensors)`)."""
        media = sample.media or RowMedia()
        ids, vision = encode_prompt(self.processor, sample.text, media.videos, media.images)
        where = f"{sample.benchmark} sample {sample.key} (problem_id {sample.row['problem_id']})"
        check_vision_tokens(self.processor, ids, vision, self.model_config, where=where)
        sample.inputs = (ids, vision)

    def generate(self, samples: Sequence[EvalSample]) -> list[str]:
        """Generates one output per prepared sample, in order."""
        return self.processor.batch_decode(self.generate_ids(samples), skip_special_tokens=True)

    def generate_ids(self, samples: Sequence[EvalSample]):
        """The completion token ids of prepared samples: `(samples, steps)`, padded after each end of sequence."""
        import torch

        device = next(self.model.parameters()).device
        encoded = [sample.inputs for sample in samples]
        length = max(len(ids) for ids, _ in encoded)
        input_ids = torch.tensor([[self.pad_token_id] * (length - len(ids)) + ids for ids, _ in encoded]).to(device)
        attention_mask = torch.tensor([[0] * (length - len(ids)) + [1] * len(ids) for ids, _ in encoded]).to(device)
        visions = [self._vision_on(vision, device) for _, vision in encoded]
        torch.manual_seed(self.seed)
        if self.engine is not None:
            # Every sample is its own group: each prompt is prefilled once, with its own media. (The engine runs
            # under no_grad, not inference_mode: its static buffers outlive the call and are updated in place.)
            output = self.engine.rollout(
                input_ids, attention_mask, visions, generation_config=self.generation_config,
                groups=range(len(samples)),
            ).sequences
            return output[:, length:]
        inputs = collate_vision(visions)
        if inputs:
            inputs["mm_token_type_ids"] = mm_token_type_ids(input_ids, self.image_token_id, self.video_token_id)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=self.generation_config,
                **inputs,
            )
        return output[:, length:]

    def _vision_on(self, vision, device) -> dict | None:
        """A sample's vision tensors on the model's device, pixels in the model's dtype (None for a text sample)."""
        if not vision:
            return None
        out = {key: value.to(device) for key, value in vision.items()}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in out:
                out[key] = out[key].to(self.model.dtype)
        return out


def build_vllm_request(sample: EvalSample, model_type: str | None = None) -> dict:
    """The vLLM prompt for a prepared sample: its rendered text and its already-sampled frames with their metadata.

    Videos go as `(frames, metadata)` pairs, frames uint8 `(T, H, W, 3)` and metadata the `VideoMetadata` fields as a
    dict, with `do_sample_frames=False` so that vLLM's processor neither resamples nor resizes what
    `videorft_hf.video` sampled (the format qwen-vl-utils produces with `return_video_metadata=True`). For Qwen2-VL
    and Qwen2.5-VL the sampled fps also goes in `mm_processor_kwargs["fps"]`: vLLM versions that drop the metadata
    for these families compute `second_per_grid_ts` from it (transformers >= 5 takes it from the metadata and
    ignores `fps`).

    Args:
        sample: a sample with `text` and `media` set.
        model_type: the model's `config.model_type`.

    Returns:
        `{"prompt": text, "multi_modal_data": {...}, "mm_processor_kwargs": {...}}` (no media keys for a text row).

    Example:
        >>> request = build_vllm_request(sample, "qwen2_5_vl")  # doctest: +SKIP
        >>> frames, metadata = request["multi_modal_data"]["video"][0]  # doctest: +SKIP
    """
    import dataclasses

    request: dict[str, Any] = {"prompt": sample.text}
    media = sample.media or RowMedia()
    multi_modal_data: dict[str, Any] = {}
    if media.videos:
        videos = []
        for frames, metadata in media.videos:
            fields = {f.name: getattr(metadata, f.name) for f in dataclasses.fields(metadata)}
            fields = {name: value for name, value in fields.items() if value is not None}
            fields["frames_indices"] = list(fields.get("frames_indices", []))
            fields["do_sample_frames"] = False
            videos.append((frames, fields))
        multi_modal_data["video"] = videos
        kwargs: dict[str, Any] = {"do_sample_frames": False}
        if model_type in ("qwen2_vl", "qwen2_5_vl") and len(media.videos) == 1:
            kwargs["fps"] = float(media.videos[0][1].sampled_fps)
        request["mm_processor_kwargs"] = kwargs
    if media.images:
        multi_modal_data["image"] = list(media.images) if len(media.images) > 1 else media.images[0]
    if multi_modal_data:
        request["multi_modal_data"] = multi_modal_data
    return request


def require_vllm():
    """Returns the `vllm` module, or raises `ImportError` with the command that installs it."""
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            "The vLLM backend needs vLLM: pip install 'videorft_hf[vllm]' (on a machine with a CUDA GPU), or use "
            "backend='transformers'."
        ) from error
    return vllm


class VLLMGenerator:
    """Generation with vLLM (`pip install 'videorft_hf[vllm]'`, on a CUDA GPU; vLLM's CPU build runs it too).

    Prompts are rendered and media decoded exactly as for the transformers backend; requests are built by
    `build_vllm_request` (the rendered text, whose image and video placeholders vLLM expands). `make test-vllm` runs
    `videorft eval --backend vllm` on vLLM's CPU build and compares its answers with the transformers backend's.

    Args:
        model_name_or_path: the checkpoint vLLM loads (merge an adapter first, see `videorft_hf.modeling.merge_adapter`).
        processor: its processor (prompt rendering).
        model_config: its config.
        max_new_tokens, temperature, top_p, seed: decoding.
        gpu_memory_utilization, tensor_parallel_size, max_model_len: engine settings.
        llm: an already built `vllm.LLM` (then the engine settings are unused).

    Raises:
        ImportError: vLLM is not installed (with the command that installs it).
    """

    def __init__(
        self,
        model_name_or_path: str,
        processor,
        model_config,
        *,
        max_new_tokens: int = 1024,
        temperature: float = 0.1,
        top_p: float = 0.001,
        seed: int = 42,
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        llm=None,
    ):
        vllm = require_vllm()
        self.processor = processor
        self.model_config = model_config
        self.model_type = getattr(model_config, "model_type", None)
        if llm is None:
            engine: dict[str, Any] = {
                "model": model_name_or_path,
                "gpu_memory_utilization": gpu_memory_utilization,
                "tensor_parallel_size": tensor_parallel_size,
                "seed": seed,
                "limit_mm_per_prompt": {"video": 1, "image": 1},
            }
            if max_model_len is not None:
                engine["max_model_len"] = max_model_len
            llm = vllm.LLM(**engine)
        self.llm = llm
        sampling = temperature > 0
        self.sampling_params = vllm.SamplingParams(
            max_tokens=max_new_tokens,
            temperature=temperature if sampling else 0.0,
            top_p=top_p if sampling else 1.0,
            seed=seed,
        )

    def prepare(self, sample: EvalSample) -> None:
        sample.inputs = build_vllm_request(sample, self.model_type)

    def generate(self, samples: Sequence[EvalSample]) -> list[str]:
        outputs = self.llm.generate([sample.inputs for sample in samples], self.sampling_params, use_tqdm=False)
        return [output.outputs[0].text for output in outputs]
