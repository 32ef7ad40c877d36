"""`EvalArguments`: the settings of `videorft eval`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..configs import ENGINE_ATTENTION, GENERATION_ENGINES, VideoSamplingArguments, default_generation_engine
from .benchmarks import parse_benchmark_spec


def resolve_generation_engine(value: str | None, device) -> str:
    """The generation engine a transformers-backend run uses: `value`, or by default `"compiled"` on CUDA and
    `"transformers"` elsewhere.

    Args:
        value: `"compiled"`, `"transformers"` or None (the default by device).
        device: where the model runs (a `torch.device`, or a name such as "cuda:0" or "cpu").

    Returns:
        `"compiled"` or `"transformers"`.

    Raises:
        ValueError: any other value.

    Example:
        >>> resolve_generation_engine(None, "cpu"), resolve_generation_engine(None, "cuda:1")
        ('transformers', 'compiled')
    """
    if value is not None and value not in GENERATION_ENGINES:
        raise ValueError(
            f"generation_engine must be 'compiled' (the rollout engine), 'transformers' (model.generate) or unset "
            f"(compiled on CUDA, transformers elsewhere), got {value!r}."
        )
    if value is not None:
        return value
    return default_generation_engine(getattr(device, "type", None) or str(device).split(":")[0])


@dataclass
class EvalArguments(VideoSamplingArguments):
    """Arguments of `videorft eval` (also usable from Python with `run_evaluation`).

    The video sampling fields come from `VideoSamplingArguments`, the same fields the SFT and GRPO configs have, with
    the evaluation preset as default. `on_bad_sample` defaults to "skip": a sample whose media cannot be decoded is
    recorded with its error and counted, and the run goes on.
    """

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Checkpoint folder or Hub model id (the base model when adapter_path is set)."}
    )
    adapter_path: str | None = field(
        default=None, metadata={"help": "A peft LoRA adapter to apply to the model (merged into it before eval)."}
    )
    benchmarks: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Benchmark files: 'path' (name from the file stem; Video-R1-eval's eval_vsibench.json becomes "
            "VSI-Bench), 'name=path', or 'name=repo_id[:data_file]' for a Hub dataset."
        },
    )
    media_root: str | None = field(
        default=None, metadata={"help": "Folder the records' './' media paths are relative to."}
    )
    output_dir: str = field(default="eval_results", metadata={"help": "Where predictions and results are written."})
    batch_size: int = field(default=8, metadata={"help": "Samples per generation call."})
    backend: str = field(default="transformers", metadata={"help": "'transformers' (generate) or 'vllm'."})
    generation_engine: str | None = field(
        default=None,
        metadata={
            "help": "How the transformers backend generates: 'compiled' (the rollout engine: static KV cache, decode "
            "step compiled on CUDA, eager on CPU) or 'transformers' (model.generate). Default: compiled on CUDA, "
            "transformers elsewhere."
        },
    )
    max_new_tokens: int = field(default=1024, metadata={"help": "Most tokens generated per sample (paper: 1024)."})
    temperature: float = field(default=0.1, metadata={"help": "Sampling temperature (paper: 0.1); 0 is greedy."})
    top_p: float = field(default=0.001, metadata={"help": "Nucleus sampling mass (paper: 0.001)."})
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "System prompt; use the value the model was trained with (default: none, as the release)."},
    )
    max_samples: int | None = field(
        default=None, metadata={"help": "Evaluate only the first N samples of each benchmark (for smoke tests)."}
    )
    seed: int = field(default=42, metadata={"help": "Random seed of sampling (set before every batch)."})
    dtype: str = field(
        default="auto", metadata={"help": "Model dtype: 'auto' (bfloat16 on GPU, float32 on CPU) or a torch dtype."}
    )
    device: str | None = field(default=None, metadata={"help": "Device for transformers (default: cuda if any)."})
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention implementation for transformers (e.g. 'flash_attention_2')."}
    )
    decode_workers: int = field(
        default=2, metadata={"help": "Threads decoding the next batches' media while the model generates (0: none)."}
    )
    retry_errors: bool = field(
        default=False, metadata={"help": "On resume, retry samples that were recorded with a media error."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Discard earlier predictions in output_dir instead of resuming."}
    )
    dataset_split: str = field(default="test", metadata={"help": "Split to load for Hub benchmarks."})
    cache_dir: str | None = field(default=None, metadata={"help": "`datasets` cache folder."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar per benchmark."})
    vllm_gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vLLM: share of GPU memory to use."})
    vllm_tensor_parallel_size: int = field(default=1, metadata={"help": "vLLM: tensor parallel size."})
    vllm_max_model_len: int | None = field(default=None, metadata={"help": "vLLM: context length (default: model's)."})
    # Overridden defaults of VideoSamplingArguments.
    video_sampling_preset: str = field(
        default="videorft-eval",
        metadata={
            "help": "Sampling preset: 'videorft-eval' (32 frames at 256*28*28, the paper), 'videorft-train', ..."
        },
    )
    frame_cache_bytes: int = field(
        default=2 * 1024**3,
        metadata={"help": "Reuse decoded frames up to this many bytes (VSI-Bench asks many questions per video)."},
    )
    on_bad_sample: str = field(
        default="skip",
        metadata={
            "help": "A sample whose media cannot be decoded: 'skip' (recorded as an error, counted) or 'raise'."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.backend not in ("transformers", "vllm"):
            raise ValueError(f"backend must be 'transformers' or 'vllm', got {self.backend!r}.")
        resolve_generation_engine(self.generation_engine, "cpu")  # a bad value fails here, before anything loads
        if self.backend == "vllm" and self.generation_engine is not None:
            raise ValueError(
                f"generation_engine={self.generation_engine!r} selects how the transformers backend generates; vLLM "
                "generates with its own engine. Unset generation_engine, or use backend='transformers'."
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be >= 0 (0 decodes greedily), got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {self.max_samples}.")
        if self.decode_workers < 0:
            raise ValueError(f"decode_workers must be >= 0, got {self.decode_workers}.")
        if isinstance(self.benchmarks, str):
            self.benchmarks = [self.benchmarks]
        for spec in self.benchmarks:
            parse_benchmark_spec(spec)  # fails now, not after the model has loaded

    def resolved_generation_engine(self) -> str | None:
        """The engine the transformers backend generates with (None with vLLM): `generation_engine`, or by default
        `"compiled"` when the model goes to CUDA (`device`, else CUDA when available) and `"transformers"` elsewhere.

        Raises:
            ValueError: the compiled engine with an attention implementation it does not run (it runs sdpa and
                eager), before the model loads.
        """
        if self.backend != "transformers":
            return None
        device = self.device
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        engine = resolve_generation_engine(self.generation_engine, device)
        if engine == "compiled" and self.attn_implementation not in (None, *ENGINE_ATTENTION):
            raise ValueError(
                f"The compiled generation engine runs sdpa or eager attention, not attn_implementation="
                f"{self.attn_implementation!r}: pass --attn_implementation sdpa, or --generation_engine transformers "
                "to generate with model.generate."
            )
        return engine
