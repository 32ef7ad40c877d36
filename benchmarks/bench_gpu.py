"""GPU benchmark of the real commands: `videorft grpo` (QLoRA and paper recipes), `videorft sft` (QLoRA recipe) and
`videorft eval` on Qwen2.5-VL-7B and Qwen3-VL-8B, with the time of each step split by stage.

The models are the exact architectures of Qwen2.5-VL-7B-Instruct and Qwen3-VL-8B-Instruct, and the semantic reward's
encoder that of SigLIP so400m-patch14-384, built from their configs (written below) with random weights: nothing is
downloaded. The tokenizer is the test kit's byte-level Qwen tokenizer with BPE merges learned from the recipe's
prompts (prompts cost about what they cost with the real one); random weights never sample the end-of-sequence
token, so every completion runs to its full length. Videos are real H.264 clips written with
`write_test_video(pattern="footage")`, which costs what camera footage costs to decode.

Each run calls the command's own `main(argv)` with the recipe (`--config`) and flags for the model, data, step count
and completion length, in a process of its own (peak memory is the run's own), and reports:

- peak allocated and reserved GPU memory (whole run, and from the first training step on);
- step time split into data loading, media decoding, prompt encoding (processor), generation, rewards, log-prob
  passes (no-grad reference/old passes, and the policy's own forward with grad), and the rest of the step
  (backward, optimiser, loss);
- generated tokens per second (tokens that generation returned, over generation time);
- the share of the elements of each trainable tensor that changed between the start and the end of training (the
  table counts the tensors of which at least 90% changed, overall and per vision / language group).

The final `save_model` of each command is skipped (writing a 7B checkpoint measures the disk, not the recipe), and
checkpoints are off (`--save_strategy no`). GRPO and eval generate with the rollout engine (`--generation_engine
compiled`: static KV cache, decode step compiled into a CUDA graph on the GPU, eager on CPU); each `<run>-generate`
run is `<run>` on transformers' `generate`, the reference path, and the table ends with the engine's generation speed
over it (`engine_speedup`). `grpo-qlora-256-merged` generates from merged bf16 copies of the 4-bit base and its
adapters (`--generation_merge_lora true`) where `grpo-qlora-256` runs the 4-bit base with its adapters: the two
options' speed and peak memory. The paper's GRPO recipe runs without vLLM and without DeepSpeed
(`--use_vllm false`, one process), and AdamW's moments in 8 bits (`--optim adamw_bnb_8bit`:
float32 weights, gradients and moments and the reference model exceed one GPU's memory), the recipe's other values
unchanged. The `prefix-*` runs time `bench_prefix.py`'s log-prob passes on the 7B architecture, prompt shared and per
row. A random policy is
never correct, so the recipe's rewards are all 0, every advantage is 0 and no weight would receive a gradient: the
GRPO runs add `ungated_semantic_reward` (the semantic-consistency reward without its accuracy gate) to the recipe's
rewards. It varies between completions, so every step trains, and SigLIP encodes every rollout's frames and texts,
as the gated reward does in a real run once answers are correct.

    make bench-gpu                                           # GPU only; planned for 8 minutes (--budget_s 480)
    HF_HUB_OFFLINE=1 python benchmarks/bench_gpu.py --runs grpo-paper-1024 eval --json gpu.json
    HF_HUB_OFFLINE=1 python benchmarks/bench_gpu.py --tiny   # the whole pipeline on CPU at tiny sizes (the tests)

Runs go in the order of `default_runs()`; with `--budget_s`, a run whose estimate no longer fits is skipped and listed
(run it with `--runs NAME`). Models and videos are kept in `--work_dir` and reused by later invocations.
`main(argv)` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
GRPO_QLORA = RECIPES / "Qwen2.5-VL-7B-Instruct" / "grpo" / "config_qlora.yaml"
GRPO_PAPER = RECIPES / "Qwen2.5-VL-7B-Instruct" / "grpo" / "config_videorft.yaml"
SFT_QLORA = RECIPES / "Qwen2.5-VL-7B-Instruct" / "sft" / "config_qlora.yaml"
EVAL_RECIPE = RECIPES / "eval" / "videorft.yaml"
GIB = 1024**3

# ------------------------------------------------------------------------------------------------------------------
# The architectures (the published config.json values; special-token ids come from the benchmark's tokenizer)
# ------------------------------------------------------------------------------------------------------------------
QWEN2_5_VL_7B = {
    "text_config": {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "hidden_act": "silu",
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    },
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "hidden_act": "silu",
        "in_channels": 3,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
    },
    "tie_word_embeddings": False,
}
QWEN3_VL_8B = {
    "text_config": {
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5000000.0,
            "mrope_section": [24, 20, 20],
            "mrope_interleaved": True,
        },
    },
    "vision_config": {
        "depth": 27,
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_heads": 16,
        "hidden_act": "gelu_pytorch_tanh",
        "in_channels": 3,
        "out_hidden_size": 4096,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [8, 16, 24],
    },
    "tie_word_embeddings": False,
}
SIGLIP_SO400M_PATCH14_384 = {
    "text_config": {
        "vocab_size": 32000,
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "max_position_embeddings": 64,
        "hidden_act": "gelu_pytorch_tanh",
    },
    "vision_config": {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "image_size": 384,
        "patch_size": 14,
        "hidden_act": "gelu_pytorch_tanh",
    },
}
FAMILIES = {
    "qwen2_5_vl": {"label": "Qwen2.5-VL-7B", "config": QWEN2_5_VL_7B},
    "qwen3_vl": {"label": "Qwen3-VL-8B", "config": QWEN3_VL_8B},
}
# The parameter counts of the published checkpoints: the built architectures must match them exactly.
PUBLISHED_PARAMETERS = {"qwen2_5_vl": 8_292_166_656, "qwen3_vl": 8_767_123_696, "siglip": 877_960_498}

# The paper's shapes: 16 frames at 128*28*28 pixels (videorft-train), G = 8. Tiny mode: the same pipeline on CPU.
LENGTHS = (256, 1024)
TINY_LENGTHS = (4, 8)
TINY_MEDIA = ["--video_min_pixels", "3136", "--video_max_pixels", "3136"]


@dataclass
class Run:
    """One command run: `command` (grpo, sft or eval) with `recipe` and extra flags, on a model family; or `prefix`,
    the log-prob passes of `bench_prefix.py` with the prompt shared and per row (`flags` are its arguments)."""

    name: str
    command: str
    recipe: str
    family: str = "qwen2_5_vl"
    completion_length: int | None = None
    steps: int = 1
    prompts_per_step: int = 1  # GRPO: prompts per optimizer step (G = 8 completions each); SFT: samples per step
    estimate_s: float = 60.0  # on one H200, loading included: what --budget_s plans with (measured 2026-11-29)
    flags: list[str] = field(default_factory=list)
    gpu_flags: list[str] = field(default_factory=list)  # added on a GPU only (not with --tiny)
    # GRPO and eval: the generation engine ("compiled": the rollout engine, compiled on a GPU and eager on CPU;
    # "transformers": `generate`, the reference path). A run named `<name>-generate` is `<name>` on `generate`.
    engine: str | None = None


def default_runs(tiny: bool = False) -> list[Run]:
    """The benchmark's runs, most important first; at tiny sizes the completion lengths are `TINY_LENGTHS`."""
    short, long = TINY_LENGTHS if tiny else LENGTHS
    # Full fine-tuning on one GPU: fp32 trainable weights with AdamW's two fp32 moments (16 bytes a parameter,
    # 124 GiB) and the bf16 reference model do not fit in 141 GB; AdamW with 8-bit moments (bitsandbytes) does.
    one_gpu_full = ["--optim", "adamw_bnb_8bit"]
    # Estimates of the engine's runs include its compile (one graph per bucket shape); they are guesses until the
    # first GPU run measures them. The `-generate` runs are the reference path the engine's speed is read against.
    engine, generate = "compiled", "transformers"
    merged = ["--generation_merge_lora", "true"]
    return [
        # The QLoRA recipe as it ships: 8 completions per micro-batch, 2 micro-batches = 2 prompts x 8.
        # Two steps: lora_A receives its first gradient in the second (lora_B starts at zero).
        Run("grpo-qlora-256", "grpo", str(GRPO_QLORA), completion_length=short, prompts_per_step=2,
            steps=1 if tiny else 2, estimate_s=110, engine=engine),
        Run("grpo-qlora-256-generate", "grpo", str(GRPO_QLORA), completion_length=short, prompts_per_step=2,
            steps=1 if tiny else 2, estimate_s=110, engine=generate),
        Run("grpo-paper-256", "grpo", str(GRPO_PAPER), completion_length=short, estimate_s=95, gpu_flags=one_gpu_full,
            engine=engine),
        Run("eval", "eval", str(EVAL_RECIPE), estimate_s=60, engine=engine),
        Run("eval-generate", "eval", str(EVAL_RECIPE), estimate_s=40, engine=generate),
        # QLoRA option (b): merged bf16 copies W0 + s*B*A, against (a), the 4-bit base with adapters (grpo-qlora-256).
        Run("grpo-qlora-256-merged", "grpo", str(GRPO_QLORA), completion_length=short, prompts_per_step=2,
            steps=1 if tiny else 2, estimate_s=110, flags=merged, engine=engine),
        Run("grpo-paper-256-generate", "grpo", str(GRPO_PAPER), completion_length=short, estimate_s=95,
            gpu_flags=one_gpu_full, engine=generate),
        Run("sft-qlora", "sft", str(SFT_QLORA), steps=2 if tiny else 3, estimate_s=40),
        # The paper's shape (1 prompt x 8 completions of up to 1024 tokens, a 1,186-token video prompt) on the 7B
        # architecture: the reference / policy log-prob passes with the prompt computed once and per row, and each
        # path's log-prob error against float32.
        Run("prefix-sharing-1024", "prefix", "", family="", completion_length=long, estimate_s=70),
        Run("grpo-paper-1024", "grpo", str(GRPO_PAPER), completion_length=long, estimate_s=160,
            gpu_flags=one_gpu_full, engine=engine),
        Run("grpo-qlora-1024", "grpo", str(GRPO_QLORA), completion_length=long, estimate_s=170, engine=engine),
        Run("qwen3-grpo-qlora-256", "grpo", str(GRPO_QLORA), family="qwen3_vl", completion_length=short,
            estimate_s=90, engine=engine),
        Run("prefix-sharing-1024-2prompts", "prefix", "", family="", completion_length=long, prompts_per_step=2,
            estimate_s=125),
    ]


# ------------------------------------------------------------------------------------------------------------------
# Models, media and data
# ------------------------------------------------------------------------------------------------------------------
def tokenizer_corpus() -> list[str]:
    """Texts the benchmark tokenizer learns its merges from: the training prompts and typical answers."""
    from videorft_hf.prompts import QUESTION_TEMPLATE, TYPE_TEMPLATE

    questions = [f"What happens in clip {i}? Which object moves first?" for i in range(8)]
    corpus = [QUESTION_TEMPLATE.format(Question=q) + TYPE_TEMPLATE["multiple choice"] for q in questions]
    corpus += list(TYPE_TEMPLATE.values()) + [_COT_SENTENCE * 4, "<think>let me think</think>\n<answer>A</answer>"]
    return corpus


_COT_SENTENCE = "Let me think: the red square moves to the right while the camera pans, so the answer is A. "


def full_config(family: str, tokenizer):
    """The published architecture of `family` with the special-token ids of `tokenizer`."""
    from transformers import AutoConfig

    ids = {
        "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    }
    values = json.loads(json.dumps(FAMILIES[family]["config"]))
    values["text_config"].update(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    return AutoConfig.for_model(family, **values, **ids)


def siglip_config(tokenizer=None):
    """SigLIP so400m-patch14-384, with the special-token ids of `tokenizer` (pad = end of text, as in SigLIP)."""
    from transformers import SiglipConfig

    values = json.loads(json.dumps(SIGLIP_SO400M_PATCH14_384))
    if tokenizer is not None:
        ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
        values["text_config"].update(ids, bos_token_id=tokenizer.eos_token_id)
    return SiglipConfig(**values)


def build_vlm(family: str, path: Path, tiny: bool) -> dict:
    """Writes a random-weight model of `family` and its processor to `path` (tiny: the test kit's tiny model)."""
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    from videorft_hf.testing import build_tiny_processor, save_tiny_vlm

    if tiny:
        save_tiny_vlm(family, path, tokenizer_corpus=tokenizer_corpus())
        return {"parameters": None}
    processor = build_tiny_processor(family, tokenizer_corpus=tokenizer_corpus())
    tokenizer = processor.tokenizer
    with torch.device("cuda"):
        model = AutoModelForImageTextToText.from_config(full_config(family, tokenizer), dtype=torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tokenizer.pad_token_id,
    )
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return {"parameters": parameters}


def build_siglip(path: Path, tiny: bool) -> dict:
    """Writes a random-weight SigLIP so400m-patch14-384 (tiny: the test kit's tiny SigLIP) with a processor."""
    import torch
    from transformers import SiglipImageProcessor, SiglipModel, SiglipProcessor

    from videorft_hf.testing import build_tiny_siglip, save_tiny_siglip

    if tiny:
        save_tiny_siglip(path)
        return {"parameters": None}
    _, tiny_processor = build_tiny_siglip()
    with torch.device("cuda"):
        model = SiglipModel(siglip_config(tiny_processor.tokenizer))
    image_processor = SiglipImageProcessor(
        size={"height": 384, "width": 384}, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]
    )
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(path)
    SiglipProcessor(image_processor=image_processor, tokenizer=tiny_processor.tokenizer).save_pretrained(path)
    return {"parameters": parameters}


def _write_clip(arguments: tuple) -> str:
    from videorft_hf.testing import write_test_video

    path, frames, fps, width, height = arguments
    write_test_video(path, num_frames=frames, fps=fps, width=width, height=height, gop=240, pattern="footage")
    return path


def write_media(root: Path, tiny: bool) -> list[str]:
    """Footage-cost clips (`media/clip<i>.mp4`): four of 30 s at 640x360 and 30 fps, written in parallel (tiny: two
    of 32 frames at 64x64 and 8 fps)."""
    from concurrent.futures import ProcessPoolExecutor

    count, frames, fps, width, height = (2, 32, 8, 64, 64) if tiny else (4, 900, 30, 640, 360)
    jobs = [(str(root / "media" / f"clip{i}.mp4"), frames, fps, width, height) for i in range(count)]
    todo = [job for job in jobs if not Path(job[0]).is_file()]
    if len(todo) > 1 and not tiny:
        with ProcessPoolExecutor(min(len(todo), os.cpu_count() or 1)) as pool:
            list(pool.map(_write_clip, todo))
    else:
        for job in todo:
            _write_clip(job)
    return [f"./media/clip{i}.mp4" for i in range(count)]


_SEMANTIC_REWARD = None


def ungated_semantic_reward(completions, **kwargs):
    """VideoRFT's semantic-consistency reward without the accuracy gate, with the benchmark's SigLIP (the path in
    the `BENCH_GPU_SIGLIP` environment variable). `videorft grpo` gets it as
    `--reward_funcs ... benchmarks.bench_gpu.ungated_semantic_reward` (a dotted path, imported from the repository)."""
    global _SEMANTIC_REWARD
    if _SEMANTIC_REWARD is None:
        from videorft_hf.rewards import get_semantic_consistency_reward

        _SEMANTIC_REWARD = get_semantic_consistency_reward(os.environ["BENCH_GPU_SIGLIP"], gate_on_accuracy=False)
    return _SEMANTIC_REWARD(completions, **kwargs)


def write_datasets(root: Path, clips: list[str], cot_words: int) -> dict[str, str]:
    """An RL set, a CoT set (targets of about `cot_words` words) and an eval benchmark, in the release schema."""
    from videorft_hf.testing import make_record

    records = [
        make_record(
            i, "multiple choice", "A", clips[i % len(clips)], options=["A. left", "B. right", "C. up", "D. down"],
            problem=f"Which way does the camera pan in clip {i}?", data_source="bench",
        )
        for i in range(16)
    ]
    words = _COT_SENTENCE.split()
    process = "<think>" + " ".join(words[i % len(words)] for i in range(cot_words)) + "</think>"
    paths = {"rl": root / "rl.jsonl", "cot": root / "cot.jsonl", "eval": root / "eval_bench.json"}
    paths["rl"].write_text("".join(json.dumps(r) + "\n" for r in records))
    paths["cot"].write_text("".join(json.dumps({**r, "process": process}) + "\n" for r in records))
    paths["eval"].write_text(json.dumps(records))
    return {key: str(value) for key, value in paths.items()}


# ------------------------------------------------------------------------------------------------------------------
# Instrumentation (inside the run's process)
# ------------------------------------------------------------------------------------------------------------------
class Recorder:
    """Exclusive time per stage (a stage nested in another is not counted twice) and generated tokens."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.tokens = 0
        self.generation_calls = 0
        self._stack: list[list] = []  # [stage, start, seconds of nested stages]

    def timed(self, stage_of, function):
        """Wraps `function`; `stage_of(*args, **kwargs)` names the stage of a call."""
        recorder = self

        def wrapper(*args, **kwargs):
            stage = stage_of(*args, **kwargs)
            _synchronize()
            recorder._stack.append([stage, time.perf_counter(), 0.0])
            try:
                return function(*args, **kwargs)
            finally:
                _synchronize()
                stage, start, nested = recorder._stack.pop()
                elapsed = time.perf_counter() - start
                recorder.seconds[stage] = recorder.seconds.get(stage, 0.0) + elapsed - nested
                if recorder._stack:
                    recorder._stack[-1][2] += elapsed

        wrapper.__wrapped__ = function
        return wrapper


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _memory() -> dict[str, float | None]:
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return {"allocated_gib": None, "reserved_gib": None}
    return {
        "allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 2),
        "reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 2),
    }


def _reset_peak() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


STAGES = ("data", "decode", "encode", "generation", "rewards", "logprob_nograd", "logprob_policy")


def _trainer_callback(recorder: Recorder, report: dict):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Per optimizer step: wall time, the stages' share of it, and the trainable tensors before and after."""

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            _synchronize()
            report["memory_at_train_begin"] = _memory()
            _reset_peak()
            report["load_s"] = round(time.perf_counter() - report["_started"], 2)
            self.snapshot = {
                name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad
            }
            self.last_end = time.perf_counter()
            self.last_seconds = dict(recorder.seconds)

        def on_step_begin(self, args, state, control, **kwargs):
            self.data = time.perf_counter() - self.last_end  # the data loader's batches of this step

        def on_step_end(self, args, state, control, **kwargs):
            _synchronize()
            now = time.perf_counter()
            step = {"step_s": now - self.last_end, "data": self.data}
            for stage in STAGES[1:]:
                step[stage] = recorder.seconds.get(stage, 0.0) - self.last_seconds.get(stage, 0.0)
            step["backward_optimizer"] = step["step_s"] - sum(step[stage] for stage in STAGES)
            report["per_step"].append({key: round(value, 3) for key, value in step.items()})
            self.last_end, self.last_seconds = now, dict(recorder.seconds)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            _synchronize()
            report["memory_training"] = _memory()
            report["logs"] = [entry for entry in state.log_history if "loss" in entry]  # loss, grad norm, rewards
            report["trainable"] = moved_shares(self.snapshot, model)
            self.snapshot = None

    return StepTimer()


def moved_shares(before: dict, model) -> dict:
    """Share of the elements of each trainable tensor that differ from `before`, summarised per vision/language."""
    import torch

    shares, dtypes = {}, {}
    for name, parameter in model.named_parameters():
        if name not in before:
            continue
        with torch.no_grad():
            current = parameter.detach()
            changed = (current != before[name].to(current.device)).sum().item()
        shares[name] = changed / max(1, current.numel())
        dtypes[str(parameter.dtype).removeprefix("torch.")] = dtypes.get(str(parameter.dtype).removeprefix("torch."), 0) + 1
    groups = {}
    for group in ("vision", "language"):
        values = {n: s for n, s in shares.items() if (".visual." in n) == (group == "vision")}
        if values:
            lowest = min(values, key=values.get)
            groups[group] = {
                "tensors": len(values),
                "min_share": round(values[lowest], 4),
                "min_tensor": lowest,
                "mean_share": round(statistics.fmean(values.values()), 4),
                "below_0.9": sum(share < 0.9 for share in values.values()),
            }
    lowest = min(shares, key=shares.get) if shares else None
    below = sorted((share, name) for name, share in shares.items() if share < 0.9)
    return {
        "tensors": len(shares),
        "dtypes": dtypes,
        "min_share": round(shares[lowest], 4) if lowest else None,
        "min_tensor": lowest,
        "below_0.9": len(below),
        "lowest_tensors": {name: round(share, 4) for share, name in below[:10]},
        **groups,
        "shares": {name: round(share, 4) for name, share in shares.items()},
    }


def _instrument(recorder: Recorder, report: dict) -> list:
    """Patches the trainers and the eval generator of this process; returns the (owner, name, original) to undo."""
    from transformers import Trainer

    from videorft_hf.evaluation import TransformersGenerator
    from videorft_hf.trainer import VideoGRPOTrainer

    def stage(name):
        return lambda *args, **kwargs: name

    def logprob_stage(*args, **kwargs):
        import torch

        return "logprob_policy" if torch.is_grad_enabled() else "logprob_nograd"

    patches = []

    def patch(owner, name, wrapper):
        patches.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, wrapper)

    original_generate = VideoGRPOTrainer.__dict__["_generate_single_turn"]

    def counted_generate(self, *args, **kwargs):
        completion_ids, logprobs = original_generate(self, *args, **kwargs)
        recorder.tokens += sum(len(ids) for ids in completion_ids)
        recorder.generation_calls += 1
        return completion_ids, logprobs

    patch(VideoGRPOTrainer, "_load_media", recorder.timed(stage("decode"), VideoGRPOTrainer._load_media))
    patch(VideoGRPOTrainer, "_tokenize_prompts", recorder.timed(stage("encode"), VideoGRPOTrainer._tokenize_prompts))
    patch(VideoGRPOTrainer, "_generate_single_turn", recorder.timed(stage("generation"), counted_generate))
    patch(VideoGRPOTrainer, "_calculate_rewards", recorder.timed(stage("rewards"), VideoGRPOTrainer._calculate_rewards))
    patch(
        VideoGRPOTrainer,
        "_get_per_token_logps_and_entropies",
        recorder.timed(logprob_stage, VideoGRPOTrainer._get_per_token_logps_and_entropies),
    )

    original_train = Trainer.__dict__["train"]

    def train(self, *args, **kwargs):
        self.add_callback(_trainer_callback(recorder, report))
        report["trainable_parameters"] = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return original_train(self, *args, **kwargs)

    def save_model(self, output_dir=None, _internal_call=False):
        report["save_model_skipped"] = True

    patch(Trainer, "train", train)
    patch(Trainer, "save_model", save_model)

    original_generate_ids = TransformersGenerator.__dict__["generate_ids"]

    def eval_generate_ids(self, samples):
        # Both engines (the rollout engine and `generate`) return the completion ids through this method.
        completion_ids = original_generate_ids(self, samples)
        recorder.tokens += int((completion_ids != self.pad_token_id).sum())
        recorder.generation_calls += 1
        return completion_ids

    patch(TransformersGenerator, "generate_ids", recorder.timed(stage("generation"), eval_generate_ids))
    return patches


def run_prefix(spec: dict) -> dict:
    """Runs `bench_prefix.py` with the run's arguments; returns its figures."""
    from benchmarks import bench_prefix

    started = time.perf_counter()
    figures = bench_prefix.main(spec["argv"])
    return {"name": spec["name"], **figures, "wall_s": round(time.perf_counter() - started, 2)}


def run_command(spec: dict) -> dict:
    """Runs one command in this process with the instrumentation on; returns its figures."""
    import torch

    recorder = Recorder()
    report: dict[str, Any] = {"name": spec["name"], "per_step": [], "_started": time.perf_counter()}
    os.environ["BENCH_GPU_SIGLIP"] = spec["siglip"]
    if torch.cuda.is_available() and not spec["tiny"]:
        torch.cuda.init()
        _reset_peak()
        report["device"] = torch.cuda.get_device_name()
    patches = _instrument(recorder, report)
    try:
        module = __import__(f"videorft_hf.scripts.{spec['command']}", fromlist=["main"])
        module.main(spec["argv"])
    finally:
        for owner, name, original in reversed(patches):
            setattr(owner, name, original)
    report["wall_s"] = round(time.perf_counter() - report.pop("_started"), 2)
    # The run's peak: loading, then training (the comparison of the trainable tensors afterwards is not counted).
    phases = [report[key] for key in ("memory_at_train_begin", "memory_training") if key in report] or [_memory()]
    report["memory_run"] = {
        key: None if phases[0][key] is None else max(phase[key] for phase in phases) for key in phases[0]
    }
    report["max_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 2)
    report["generated_tokens"] = recorder.tokens
    generation = recorder.seconds.get("generation", 0.0)
    report["generation_s"] = round(generation, 3)
    report["tokens_per_s"] = round(recorder.tokens / generation, 1) if generation else None
    if spec["command"] == "eval":
        samples = spec["argv"][spec["argv"].index("--max_samples") + 1]
        report["seconds_per_sample"] = round(generation / int(samples), 3)
    return summarise(report)


def summarise(report: dict) -> dict:
    """Adds the median step (over steps after the first when there are several) and each stage's share of it."""
    steps = report["per_step"]
    if steps:
        measured = steps[1:] if len(steps) > 2 else steps
        median = {key: round(statistics.median(s[key] for s in measured), 3) for key in measured[0]}
        report["step"] = median
        total = median["step_s"] or 1.0
        report["share"] = {key: round(value / total, 3) for key, value in median.items() if key != "step_s"}
    return report


# ------------------------------------------------------------------------------------------------------------------
# The runs
# ------------------------------------------------------------------------------------------------------------------
def command_argv(run: Run, paths: dict[str, str], tiny: bool, workdir: Path, extra_reward: bool = True) -> list[str]:
    """The command line of a run: the recipe, then flags for the model, data and sizes (flags override).
    `extra_reward` adds `ungated_semantic_reward` to a GRPO run's rewards (see the module docstring)."""
    if run.command == "prefix":
        argv = ["--prompts", str(run.prompts_per_step), "--completion", str(run.completion_length),
                "--trainer_steps", "0", "--repeats", "1" if tiny else "2"]
        return argv + (["--generation_tokens", "2"] if tiny else
                       ["--model", "full", "--device", "cuda", "--generation_tokens", "16"]) + run.flags
    model = paths[run.family]
    out = str(workdir / "outputs" / run.name)
    if run.command == "eval":
        argv = ["--config", run.recipe, "--model_name_or_path", model, "--benchmarks", f"Bench={paths['eval']}",
                "--media_root", paths["root"], "--output_dir", out, "--overwrite_output_dir", "true",
                "--max_samples", "8", "--batch_size", "8", "--max_new_tokens", "64", "--progress", "false"]
        if tiny:
            argv += ["--max_new_tokens", "8", "--device", "cpu"] + TINY_MEDIA
        return argv + _engine_flags(run) + run.flags
    argv = ["--config", run.recipe, "--model_name_or_path", model, "--media_root", paths["root"],
            "--output_dir", out, "--max_steps", str(run.steps), "--save_strategy", "no", "--report_to", "none",
            "--logging_steps", "1"]
    if run.command == "grpo":
        rewards = recipe_values(run.recipe).get("reward_funcs") or []
        argv += ["--reward_funcs", *rewards] + (["benchmarks.bench_gpu.ungated_semantic_reward"] if extra_reward else [])
        argv += ["--dataset_name", paths["rl"], "--semantic_model_name_or_path", paths["siglip"],
                 "--max_completion_length", str(run.completion_length), "--use_vllm", "false",
                 "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", str(run.prompts_per_step),
                 "--log_completions", "false"] + _engine_flags(run)
    else:
        argv += ["--dataset_name", paths["cot"], "--gradient_accumulation_steps", str(run.prompts_per_step)]
        if tiny:
            argv += ["--dataloader_num_workers", "0", "--dataloader_persistent_workers", "false"]
    if tiny:
        argv += ["--use_cpu", "true"] + TINY_MEDIA
    return argv + run.flags + ([] if tiny else run.gpu_flags)


def _engine_flags(run: Run) -> list[str]:
    return ["--generation_engine", run.engine] if run.engine else []


def engine_speedups(runs: dict) -> dict[str, float]:
    """Generation speed of each engine run over its `-generate` twin's, from the same invocation (the ratio the
    engine is judged by; absolute tokens/s depend on the card)."""
    speedups = {}
    for name, run in runs.items():
        twin = runs.get(f"{name}-generate")
        if twin and run.get("tokens_per_s") and twin.get("tokens_per_s"):
            speedups[name] = round(run["tokens_per_s"] / twin["tokens_per_s"], 2)
    return speedups


def recipe_values(recipe: str) -> dict:
    import yaml

    return yaml.safe_load(Path(recipe).read_text()) or {}


def _child(spec: dict, out: Path, isolation: str, timeout: float) -> dict:
    """Runs `spec` (a build or a command) in a fresh interpreter, or here with isolation 'none'."""
    if isolation == "none":
        return _execute(spec)
    spec_path = out.with_suffix(".spec.json")
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    log = out.with_suffix(".log")
    with open(log, "w") as stream:
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_gpu", "--child", str(spec_path), "--out", str(out)],
            cwd=REPO, env=env, stdout=stream, stderr=subprocess.STDOUT, timeout=timeout,
        )
    if completed.returncode != 0 or not out.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{spec['name']} failed (exit {completed.returncode}; log {log}): " + " / ".join(tail))
    return json.loads(out.read_text())


def _execute(spec: dict) -> dict:
    started = time.perf_counter()
    if spec["kind"] == "build_vlm":
        figures = build_vlm(spec["family"], Path(spec["path"]), spec["tiny"])
    elif spec["kind"] == "build_siglip":
        figures = build_siglip(Path(spec["path"]), spec["tiny"])
    elif spec["command"] == "prefix":
        return run_prefix(spec)
    else:
        return run_command(spec)
    return {**figures, "name": spec["name"], "wall_s": round(time.perf_counter() - started, 2)}


def _prepare_model(kind: str, name: str, path: Path, tiny: bool, isolation: str, family: str | None = None) -> dict:
    marker = path / "bench_gpu_built.json"
    if marker.is_file():
        return {**json.loads(marker.read_text()), "reused": True}
    spec = {"kind": kind, "name": name, "path": str(path), "tiny": tiny, "family": family}
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = _child(spec, path.parent / f"{name}.json", isolation, timeout=1800)
    marker.write_text(json.dumps(figures))
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models on CPU: the whole pipeline in a minute")
    parser.add_argument("--runs", nargs="+", help=f"run names (default: all, in order); one of "
                        f"{[r.name for r in default_runs()]}")
    parser.add_argument("--steps", type=int, help="optimizer steps of every training run (default: per run)")
    parser.add_argument("--budget_s", type=float, default=480, help="skip runs whose estimate no longer fits")
    parser.add_argument("--work_dir", help="models, videos and outputs (kept for later invocations)")
    parser.add_argument("--isolation", choices=("process", "none"), help="a process per run (default on GPU) "
                        "or all in this one (default with --tiny)")
    parser.add_argument("--recipe_rewards_only", action="store_true", help="GRPO without ungated_semantic_reward: "
                        "nothing trains (all rewards 0) and SigLIP (3.3 GiB) is never loaded, as in a measurement "
                        "made without it")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        figures = _execute(json.loads(Path(args.child).read_text()))
        Path(args.out).write_text(json.dumps(figures, default=str))
        return figures

    import torch

    if not args.tiny and not torch.cuda.is_available():
        parser.error("bench_gpu needs a CUDA GPU; --tiny runs the same pipeline on CPU at tiny sizes.")
    isolation = args.isolation or ("none" if args.tiny else "process")
    runs = default_runs(args.tiny)
    if args.runs:
        unknown = set(args.runs) - {r.name for r in runs}
        if unknown:
            parser.error(f"unknown runs {sorted(unknown)}; there are {[r.name for r in runs]}")
        runs = [r for r in runs if r.name in args.runs]
    if args.steps:
        for run in runs:
            run.steps = args.steps
    workdir = Path(args.work_dir or Path(tempfile.gettempdir()) / ("bench_gpu_tiny" if args.tiny else "bench_gpu"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    figures: dict[str, Any] = {
        "machine": "cpu",  # the GPU's name comes from the first run (this process never initialises CUDA)
        "date": time.strftime("%Y-%m-%d"),
        "tiny": args.tiny,
        "recipe_rewards_only": args.recipe_rewards_only,
        "versions": _versions(),
        "setup": {},
        "runs": {},
        "skipped": [],
    }
    clips = write_media(workdir, args.tiny)
    paths = {"root": str(workdir), **write_datasets(workdir, clips, cot_words=60 if args.tiny else 700)}
    figures["setup"]["media_s"] = round(time.perf_counter() - started, 2)
    paths["siglip"] = str(workdir / "models" / "siglip")
    figures["setup"]["siglip"] = _prepare_model(
        "build_siglip", "siglip", Path(paths["siglip"]), args.tiny, isolation
    )
    for run in runs:
        elapsed = time.perf_counter() - started
        if run.family and run.family not in paths:
            path = workdir / "models" / run.family
            build_estimate = 0 if (path / "bench_gpu_built.json").is_file() else 60
            if not args.tiny and elapsed + build_estimate + run.estimate_s > args.budget_s:
                figures["skipped"].append(run.name)
                continue
            figures["setup"][run.family] = _prepare_model("build_vlm", run.family, path, args.tiny, isolation, run.family)
            paths[run.family] = str(path)
            elapsed = time.perf_counter() - started
        if not args.tiny and elapsed + run.estimate_s > args.budget_s:
            figures["skipped"].append(run.name)
            continue
        print(f"running {run.name} ...", file=sys.stderr, flush=True)
        spec = {"kind": "command", "name": run.name, "command": run.command, "tiny": args.tiny,
                "siglip": paths["siglip"], "argv": command_argv(run, paths, args.tiny, workdir, not args.recipe_rewards_only)}
        try:
            result = _child(spec, workdir / f"{run.name}.json", isolation, timeout=max(600, 4 * run.estimate_s))
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            result = {"error": str(error)}
        figures["runs"][run.name] = {**asdict(run), **result}
        if args.json:  # after every run: a run cut short by an outer time limit keeps the ones before it
            Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
        if result.get("device", "cpu") != "cpu":
            figures["machine"] = result["device"]
    figures["engine_speedup"] = engine_speedups(figures["runs"])
    figures["total_s"] = round(time.perf_counter() - started, 1)
    print(table(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    return figures


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "absent"
    return found


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _part(step: dict, share: dict, *keys: str) -> str:
    if not step:
        return "-"
    seconds = sum(step.get(key, 0.0) for key in keys)
    return f"{seconds:.1f} ({100 * sum(share.get(key, 0.0) for key in keys):.0f}%)"


def _moved(trainable: dict) -> str:
    """`kept / tensors` overall (vision / language): tensors of which at least 90% of the elements changed."""
    def kept(group: dict) -> str:
        return f"{group['tensors'] - group['below_0.9']}/{group['tensors']}" if group else "-"

    if not trainable:
        return "-"
    groups = " / ".join(kept(trainable.get(group, {})) for group in ("vision", "language"))
    return f"{kept(trainable)} ({groups})"


def _row(name: str, run: dict) -> str:
    if "error" in run:
        return f"| {name} | FAILED: {run['error'][-300:].replace('|', '/')} |" + " |" * 9
    if run["command"] == "prefix":
        shared, per_row = run["step_s"]["shared"], run["step_s"]["per_row"]
        peak = run.get("peak_allocated_gib") or {}
        shape = run["shape"]
        return (f"| {name} | {shape['prompts']} x 8, log-prob forward + backward, shared / per row | "
                f"{_fmt(shared, 2)} / {_fmt(per_row, 2)} ({run['step_speedup']:.2f}x) | | "
                f"prefill of {shape['generation_tokens']} tokens: {_fmt(run['generation']['s']['shared'], 2)} / "
                f"{_fmt(run['generation']['s']['per_row'], 2)} | | | | "
                f"{_fmt(peak.get('shared'))} / {_fmt(peak.get('per_row'))} (allocated, shared / per row) | | "
                f"LM tokens {run['lm_token_ratio']:.2f}x, vision patches {run['vision_patch_ratio']:.0f}x |")
    memory = run.get("memory_run", {})
    peak = f"{_fmt(memory.get('allocated_gib'))} / {_fmt(memory.get('reserved_gib'))}"
    if run["command"] == "eval":
        return (f"| {name} | 8 samples | {_fmt(run['seconds_per_sample'], 2)} per sample | "
                f"| {_fmt(run['generation_s'])} | | | | {peak} | {_fmt(run['tokens_per_s'])} | |")
    step, share = run.get("step", {}), run.get("share", {})
    shape = f"{run['prompts_per_step']} x 8" if run["command"] == "grpo" else f"{run['prompts_per_step']} sample"
    logprob = f"{_fmt(step.get('logprob_nograd'))} / {_fmt(step.get('logprob_policy'))}" if step else "-"
    return (
        f"| {name} | {shape} | {_fmt(step.get('step_s'))} | {_part(step, share, 'data', 'decode')} "
        f"| {_part(step, share, 'generation')} | {_part(step, share, 'rewards')} | {logprob} "
        f"| {_part(step, share, 'backward_optimizer')} | {peak} | {_fmt(run.get('tokens_per_s'))} "
        f"| {_moved(run.get('trainable', {}))} |"
    )


def table(figures: dict) -> str:
    """One markdown row per run: step time and its split, peak memory, generation speed, moved shares."""
    lines = [
        f"{figures['machine']}, {figures['date']}, " + ", ".join(f"{k} {v}" for k, v in figures["versions"].items()),
        "",
        "| run | batch per step | step s | data + decode | generation | rewards | log-prob s (no grad / policy) "
        "| backward + optimiser | peak GiB (allocated / reserved) | tokens/s | tensors >= 90% moved (vision / language) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(name, run) for name, run in figures["runs"].items()]
    speedups = figures.get("engine_speedup") or {}
    if speedups:
        lines.append("\nGeneration tokens/s, rollout engine over `generate` (the `-generate` run): "
                     + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in speedups.items()))
    if figures["skipped"]:
        lines.append(f"\nSkipped (budget): {', '.join(figures['skipped'])}; run them with --runs.")
    lines.append(f"\n{len(figures['runs'])} runs in {figures['total_s']:.0f} s.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
