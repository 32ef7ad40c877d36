"""Every update lands: bf16 and 4-bit models at the recipes' learning rates, in SFT and GRPO, full, LoRA and QLoRA.

The criterion of every training test here: after one optimiser step (two for LoRA, whose `lora_A` gets no gradient
while `lora_B` is zero), at least 90% of the elements of every trainable tensor, vision and language alike, differ
from their starting values. The one allowance is the input embedding, whose rows for tokens absent from the batch
get no gradient: there, each row that received a gradient must have moved in at least 90% of its elements.
Without the package's precision rule these runs move about 2% of the elements (`test_without_the_rule_...`).
"""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, TrainerCallback

from videorft_hf.configs import VideoGRPOConfig
from videorft_hf.modeling import PrecisionError, keep_updates, lost_update_fraction
from videorft_hf.testing import save_tiny_vlm, write_test_image, write_test_video
from videorft_hf.trainer import VideoGRPOTrainer

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
SAMPLING = dict(video_sampling_preset="video-r1-train", video_min_pixels=16 * 784, video_max_pixels=16 * 784)
FULL_LR, LORA_LR = 1e-6, 1e-5  # the paper's full fine-tuning rate, the QLoRA recipe's rate


def parity_reward(completions, **kwargs) -> list[float]:
    """1 for every second completion: each group of two gets nonzero advantages, so every weight gets a gradient."""
    return [float(i % 2) for i in range(len(completions))]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    for i in range(2):
        write_test_video(root / f"clip{i}.mp4", num_frames=16, fps=8, width=56, height=56)
    write_test_image(root / "still.png", width=56, height=56)
    model = AutoModelForImageTextToText.from_pretrained(save_tiny_vlm("qwen2_5_vl", root / "fp32"), dtype=torch.bfloat16)
    model.save_pretrained(root / "bf16")  # the starting point is exactly representable: changes are the updates
    (root / "fp32" / "model.safetensors").unlink()
    for name in ("processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json",
                 "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (root / "fp32" / name).is_file():
            (root / "bf16" / name).write_bytes((root / "fp32" / name).read_bytes())
    return root


def grpo_rows(root: Path) -> Dataset:
    def user(kind, text):
        return [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": text}]}]

    rows = [
        {"prompt": user("video", f"What happens in clip {i}?"), "video": str(root / f"clip{i}.mp4"), "image": None}
        for i in (0, 1)
    ]
    rows.append({"prompt": user("image", "What colour is it?"), "video": None, "image": str(root / "still.png")})
    rows.append({"prompt": user("video", "And now?"), "video": str(root / "clip0.mp4"), "image": None})
    return Dataset.from_list(rows)


def grpo_args(tmp_path, learning_rate, max_steps=1, **overrides) -> VideoGRPOConfig:
    values = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=2, max_completion_length=6,
        max_steps=max_steps, learning_rate=learning_rate, report_to=[], use_cpu=True, bf16=True, logging_steps=1,
        save_strategy="no", seed=0, beta=0.04, loss_type="grpo", weight_decay=0.01, **SAMPLING,
    )
    values.update(overrides)
    return VideoGRPOConfig(**values)


class GradientRows(TrainerCallback):
    """Records which rows of the input embedding received a gradient (before each optimiser step)."""

    def __init__(self):
        self.rows: dict[str, torch.Tensor] = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        for name, parameter in model.named_parameters():
            if "embed_tokens" in name and parameter.grad is not None:
                seen = parameter.grad.abs().sum(dim=1) > 0
                self.rows[name] = self.rows.get(name, torch.zeros_like(seen)) | seen


def moved(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], rows: dict | None = None) -> dict:
    """Share of the elements of each tensor that changed; for input embeddings, the smallest share over the rows
    that moved at all (or, with `rows`, that received a gradient)."""
    shares = {}
    for name, start in before.items():
        changed = after[name].detach().float().cpu() != start.float()
        if "embed_tokens" in name:
            row_mask = rows[name].cpu() if rows and name in rows else changed.any(dim=1)
            assert row_mask.any(), f"no row of {name} received an update"
            shares[name] = changed[row_mask].float().mean(dim=1).min().item()
        else:
            shares[name] = changed.float().mean().item()
    return shares


def assert_updates_landed(shares: dict, vision: bool = True):
    low = {name: round(share, 3) for name, share in shares.items() if share < 0.9}
    assert not low, f"tensors where fewer than 90% of the elements moved: {low}"
    assert any("visual." in name for name in shares) == vision  # module names and checkpoint keys alike
    assert any("layers." in name and "visual." not in name for name in shares)


def trainable_snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def train_grpo(trainer) -> dict:
    before = trainable_snapshot(trainer.model)
    rows = GradientRows()
    trainer.add_callback(rows)
    trainer.train()
    return moved(before, dict(trainer.model.named_parameters()), rows.rows)


# ------------------------------------------------------------------------------------------------ the rule itself
def test_lost_update_fraction_predicts_a_real_bf16_adam_step():
    torch.manual_seed(0)
    weight = torch.nn.Parameter((torch.randn(256, 256) * 0.02).to(torch.bfloat16))
    predicted = lost_update_fraction(weight, 1e-6)
    start = weight.detach().clone()
    weight.grad = torch.randn_like(weight)
    torch.optim.AdamW([weight], lr=1e-6, weight_decay=0.0).step()
    measured = (weight.detach() == start).float().mean().item()
    assert predicted > 0.95 and abs(predicted - measured) < 0.02
    assert lost_update_fraction(start.float(), 1e-6) == 0.0
    assert lost_update_fraction(start, 1e-2) < 0.05  # a large step survives bf16


def test_keep_updates_upcasts_trainable_tensors_only():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)).to(torch.bfloat16)
    model[0].requires_grad_(False)
    weight = model[1].weight
    assert keep_updates(model, SimpleNamespace(learning_rate=1e-6, bf16=True)) == ["1.weight", "1.bias"]
    assert model[1].weight is weight and weight.dtype == torch.float32  # the same Parameter: references stay valid
    assert model[0].weight.dtype == torch.bfloat16  # frozen weights keep their dtype


def test_keep_updates_refuses_configurations_that_lose_updates():
    def bf16_layer():
        return torch.nn.Linear(64, 64).to(torch.bfloat16)

    with pytest.raises(PrecisionError, match=r"trainable_dtype='model'.*Set trainable_dtype='float32'"):
        keep_updates(bf16_layer(), SimpleNamespace(learning_rate=1e-6, trainable_dtype="model", bf16=True))
    keep_updates(bf16_layer(), SimpleNamespace(learning_rate=1.0, trainable_dtype="model", bf16=True))  # steps survive
    with pytest.raises(PrecisionError, match="use_transformers_continuous_batching=False"):
        keep_updates(bf16_layer(), SimpleNamespace(learning_rate=1e-6, use_transformers_continuous_batching=True, bf16=True))
    deepspeed = SimpleNamespace(learning_rate=1e-6, deepspeed_plugin=object(), bf16=False, fp16=False)
    with pytest.raises(PrecisionError, match="Set bf16: true"):
        keep_updates(bf16_layer(), deepspeed)
    layer = bf16_layer()  # DeepSpeed with bf16 keeps its own float32 master weights: nothing to upcast
    assert keep_updates(layer, SimpleNamespace(**{**vars(deepspeed), "bf16": True})) == []
    assert layer.weight.dtype == torch.bfloat16


def test_config_refuses_an_unknown_trainable_dtype(tmp_path):
    with pytest.raises(ValueError, match="trainable_dtype must be one of"):
        grpo_args(tmp_path, FULL_LR, trainable_dtype="bfloat16")


# ------------------------------------------------------------------------------------------------ GRPO
def test_grpo_full_fine_tuning_of_a_bf16_model_object_keeps_every_update(media, tmp_path):
    model = AutoModelForImageTextToText.from_pretrained(media / "bf16", dtype=torch.bfloat16)
    trainer = VideoGRPOTrainer(model, [parity_reward], args=grpo_args(tmp_path, FULL_LR), train_dataset=grpo_rows(media))
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    assert trainer.ref_model.dtype == torch.bfloat16  # the frozen reference stays as loaded
    assert_updates_landed(train_grpo(trainer))


def test_without_the_rule_most_updates_are_lost(media, tmp_path, monkeypatch):
    # The same run with the rule switched off: the test above would fail.
    monkeypatch.setattr("videorft_hf.trainer.keep_updates", lambda model, args, **kwargs: [])
    model = AutoModelForImageTextToText.from_pretrained(media / "bf16", dtype=torch.bfloat16)
    trainer = VideoGRPOTrainer(model, [parity_reward], args=grpo_args(tmp_path, FULL_LR), train_dataset=grpo_rows(media))
    shares = train_grpo(trainer)
    # Weights near zero (biases start at 0) still take small steps; every other tensor keeps about 2% of its updates.
    assert sum(share < 0.9 for share in shares.values()) > len(shares) / 2
    assert shares["model.language_model.layers.0.mlp.down_proj.weight"] < 0.1


def test_grpo_lora_on_a_bf16_model_id_keeps_every_update(media, tmp_path):
    from peft import LoraConfig

    args = grpo_args(tmp_path, LORA_LR, max_steps=2, model_init_kwargs={"dtype": "bfloat16"})
    peft_config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules="all-linear")
    trainer = VideoGRPOTrainer(
        str(media / "bf16"), [parity_reward], args=args, train_dataset=grpo_rows(media), peft_config=peft_config
    )
    dtypes = {name: p.dtype for name, p in trainer.model.named_parameters()}
    assert all(dtype == torch.float32 for name, dtype in dtypes.items() if ".lora_" in name)
    assert all(dtype == torch.bfloat16 for name, dtype in dtypes.items() if ".lora_" not in name)
    # No dropout in the policy (VideoGRPOConfig turns it off): old and new log-probs see the same network.
    assert all(m.p == 0 for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout))
    assert_updates_landed(train_grpo(trainer))


def test_grpo_qlora_keeps_every_adapter_update(media, tmp_path):
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    args = grpo_args(tmp_path, LORA_LR, max_steps=2, model_init_kwargs={"dtype": "bfloat16"})
    trainer = VideoGRPOTrainer(
        str(media / "bf16"), [parity_reward], args=args, train_dataset=grpo_rows(media),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"), quantization_config=quantization,
    )
    assert getattr(trainer.model, "is_loaded_in_4bit", False)
    assert {p.dtype for n, p in trainer.model.named_parameters() if p.requires_grad} == {torch.float32}
    assert_updates_landed(train_grpo(trainer))


def test_videorft_grpo_command_keeps_every_update(media, tmp_path):
    from videorft_hf.cli import main as cli

    records = [
        {"problem_id": i, "problem": f"Which clip is this ({i})?", "data_type": "video", "problem_type": "multiple choice",
         "options": ["A. one", "B. two"], "solution": "<answer>A</answer>", "path": f"./clip{i % 2}.mp4",
         "data_source": "test"}
        for i in range(4)
    ]
    (tmp_path / "rl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "grpo"
    argv = ["grpo", "--config", str(RECIPES / "tiny" / "grpo.yaml"), "--model_name_or_path", str(media / "bf16")]
    argv += ["--dataset_name", str(tmp_path / "rl.jsonl"), "--media_root", str(media), "--output_dir", str(out)]
    argv += ["--dtype", "bfloat16", "--bf16", "true", "--learning_rate", str(FULL_LR), "--max_steps", "1"]
    argv += ["--max_completion_length", "6", "--per_device_train_batch_size", "4", "--num_generations", "2"]
    argv += ["--save_strategy", "no", "--reward_funcs", "accuracy_reward", f"{__name__}.parity_reward"]
    assert cli(argv) == 0
    before = load_file(media / "bf16" / "model.safetensors")
    after = load_file(out / "model.safetensors")
    assert_updates_landed(moved(before, after))


# ------------------------------------------------------------------------------------------------ SFT
def cot_data(media: Path, tmp_path: Path) -> Path:
    records = [
        {"problem_id": i, "problem": f"Which frame comes first in clip {i}?", "data_type": "video",
         "problem_type": "multiple choice", "options": ["A. frame 0", "B. frame 1"],
         "process": f"<think>Clip {i} starts with frame 0.</think>", "solution": "<answer>A</answer>",
         "path": f"./clip{i}.mp4", "data_source": "test"}
        for i in (0, 1)
    ]
    path = tmp_path / "cot.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def sft_argv(media, tmp_path, out, *extra):
    argv = ["sft", "--config", str(RECIPES / "tiny" / "sft.yaml"), "--model_name_or_path", str(media / "bf16")]
    argv += ["--dataset_name", str(cot_data(media, tmp_path)), "--media_root", str(media), "--output_dir", str(out)]
    argv += ["--dtype", "bfloat16", "--bf16", "true", "--per_device_train_batch_size", "2"]
    argv += ["--gradient_accumulation_steps", "1", "--save_strategy", "no", *extra]
    return argv


def test_videorft_sft_full_fine_tuning_keeps_every_update(media, tmp_path):
    from videorft_hf.cli import main as cli

    out = tmp_path / "sft"
    assert cli(sft_argv(media, tmp_path, out, "--learning_rate", str(FULL_LR), "--max_steps", "1")) == 0
    after = load_file(out / "model.safetensors")
    assert after["model.layers.0.mlp.down_proj.weight"].dtype == torch.float32  # saved as trained
    assert_updates_landed(moved(load_file(media / "bf16" / "model.safetensors"), after))


def test_videorft_sft_qlora_keeps_every_adapter_update(media, tmp_path):
    pytest.importorskip("bitsandbytes")
    from videorft_hf.scripts import sft

    out = tmp_path / "qlora"
    argv = sft_argv(media, tmp_path, out, "--learning_rate", str(LORA_LR), "--max_steps", "2")[1:]
    argv += ["--load_in_4bit", "--use_peft", "--lora_r", "4", "--lora_target_modules", "all-linear"]
    trainer = sft.build_trainer(*sft.make_parser().parse_args_and_config(argv))
    assert getattr(trainer.model, "is_loaded_in_4bit", False)
    before = trainable_snapshot(trainer.model)
    assert before and {t.dtype for t in before.values()} == {torch.float32}  # trl had cast them to bf16
    trainer.train()
    assert_updates_landed(moved(before, dict(trainer.model.named_parameters())))


# ------------------------------------------------------------------------------------------------ recipes
def test_grpo_recipes_train_without_dropout_and_both_qlora_recipes_treat_the_vision_tower_alike():
    from videorft_hf.scripts import grpo, sft

    base = ["--dataset_name", "x", "--use_cpu", "true", "--bf16", "false"]
    for recipe in sorted(RECIPES.glob("*/grpo/*.yaml")):
        _, training_args, model_args = grpo.make_parser().parse_args_and_config(args=["--config", str(recipe), *base])
        assert training_args.disable_dropout, recipe
        assert not model_args.use_peft or model_args.lora_dropout == 0.0, recipe
        assert training_args.trainable_dtype == "float32", recipe
    qlora = {}
    for stage, module in (("sft", sft), ("grpo", grpo)):
        recipe = RECIPES / "Qwen2.5-VL-7B-Instruct" / stage / "config_qlora.yaml"
        script_args, _, model_args = module.make_parser().parse_args_and_config(args=["--config", str(recipe), *base])
        qlora[stage] = (script_args.freeze_vision_tower, model_args.lora_target_modules, model_args.lora_r)
    assert qlora["sft"] == qlora["grpo"]


def test_videorft_sft_under_ddp_with_bf16_mixed_precision_keeps_every_update(media, tmp_path):
    # Two CPU processes through the recipe's DDP config, as `accelerate launch` runs them (gloo, bf16 autocast).
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(RECIPES / "accelerate_configs" / "ddp.yaml"), "--num_processes", "2",
        "--mixed_precision", "bf16", "--main_process_port", str(port), "-m", "videorft_hf.scripts.sft",
        *sft_argv(media, tmp_path, out, "--learning_rate", str(FULL_LR), "--max_steps", "1",
                  "--per_device_train_batch_size", "1")[1:],
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "Process 1 of 2 (MULTI_CPU)" in result.stdout + result.stderr
    after = load_file(out / "model.safetensors")
    assert_updates_landed(moved(load_file(media / "bf16" / "model.safetensors"), after))
