"""SFT with stock trl.SFTTrainer and the video collator: training happens, QLoRA, `videorft sft`, two processes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trl import SFTTrainer

from videorft_hf import DataCollatorForVideoLanguageModeling, load_videorft_dataset
from videorft_hf.configs import VideoSFTConfig
from videorft_hf.scripts import sft
from videorft_hf.testing import build_tiny_vlm, save_tiny_vlm, write_test_image, write_test_video

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "recipes" / "tiny" / "sft.yaml"
# The tiny recipe's sampling: 4 frames of 56x56 per video (Qwen3-VL: 32x64), 56x56 images.
SAMPLING = dict(
    video_sampling_preset="video-r1-train",
    video_min_frames=4,
    video_max_frames=4,
    video_min_pixels=3136,
    video_max_pixels=3136,
    image_min_pixels=3136,
    image_max_pixels=3136,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Four CoT records in the release's JSONL (three videos, one image), with their media."""
    root = tmp_path_factory.mktemp("cot")
    records = []
    for i in range(4):
        data_type = "image" if i == 3 else "video"
        path = f"./media/{data_type}{i}." + ("png" if data_type == "image" else "mp4")
        if data_type == "video":
            write_test_video(root / path, num_frames=8 + 4 * i, fps=4.0, width=112, height=112)
        else:
            write_test_image(root / path, width=112, height=112, index=i)
        records.append(
            {
                "problem_id": i,
                "problem": f"Which frame comes first in clip {i}?",
                "data_type": data_type,
                "problem_type": "multiple choice",
                "options": ["A. frame 0", "B. frame 1"],
                "process": f"<think>Clip {i} starts with frame 0.</think>",
                "solution": "<answer>A</answer>",
                "path": path,
                "data_source": "test",
            }
        )
    jsonl = root / "cot.jsonl"
    jsonl.write_text("".join(json.dumps(record) + "\n" for record in records))
    return {"root": str(root), "jsonl": str(jsonl)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_vlm("qwen2_5_vl", tmp_path_factory.mktemp("models") / "qwen2_5_vl"))


def sft_args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        report_to=[],
        remove_unused_columns=False,
        activation_checkpointing=False,
        per_device_train_batch_size=2,
        max_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        max_length=1024,
        seed=0,
        **SAMPLING,
    )
    values.update(overrides)
    return VideoSFTConfig(**values)


def make_trainer(family, data, args):
    model, processor = build_tiny_vlm(family)
    dataset = load_videorft_dataset(data["jsonl"], media_root=data["root"], include_target=True)
    collator = DataCollatorForVideoLanguageModeling.from_config(processor, args)
    return SFTTrainer(model, args=args, data_collator=collator, train_dataset=dataset, processing_class=processor)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


def losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_sft_trains_language_and_vision_parameters(tmp_path, data):
    # Batches of 2 x 2 accumulation steps, decoded in 2 worker processes: spawned (the collator and the dataset
    # travel pickled), since a worker forked from this process, which has decoded video, can hang.
    args = sft_args(tmp_path, gradient_accumulation_steps=2, dataloader_num_workers=2)
    assert args.dataloader_multiprocessing_context == "spawn"
    trainer = make_trainer("qwen2_5_vl", data, args)
    before = snapshot(trainer.model)
    trainer.train()
    after = dict(trainer.model.named_parameters())
    unchanged = [name for name, value in before.items() if torch.equal(value, after[name])]
    assert not unchanged, f"parameters left untouched: {unchanged}"
    assert any(name.startswith("model.visual.blocks") for name in before)
    assert any(name.startswith("model.language_model.layers") for name in before)
    assert trainer.state.global_step == 2
    assert losses(trainer) and all(torch.isfinite(torch.tensor(loss)) for loss in losses(trainer))


def test_worker_start_method(tmp_path):
    """Workers are spawned by default; the user's start method and a loader without workers are left alone."""
    assert sft_args(tmp_path, dataloader_num_workers=2).dataloader_multiprocessing_context == "spawn"
    explicit = sft_args(tmp_path, dataloader_num_workers=2, dataloader_multiprocessing_context="fork")
    assert explicit.dataloader_multiprocessing_context == "fork"
    assert sft_args(tmp_path).dataloader_multiprocessing_context is None


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_each_family_runs_one_step(tmp_path, data, family):
    trainer = make_trainer(family, data, sft_args(tmp_path, max_steps=1, per_device_train_batch_size=4))
    trainer.train()
    assert trainer.state.global_step == 1
    assert torch.isfinite(torch.tensor(losses(trainer)[0]))


def test_skipped_samples_leave_training_running_and_are_counted(tmp_path, data):
    dataset = load_videorft_dataset(data["jsonl"], media_root=data["root"], include_target=True).select([0, 1])
    rows = [{**dataset[0], "video": os.path.join(data["root"], "media", "missing.mp4")}, dataset[1]]
    model, processor = build_tiny_vlm("qwen2_5_vl")
    args = sft_args(tmp_path, per_device_train_batch_size=1, on_bad_sample="skip")
    collator = DataCollatorForVideoLanguageModeling.from_config(processor, args)
    from datasets import Dataset

    trainer = SFTTrainer(
        model, args=args, data_collator=collator, train_dataset=Dataset.from_list(rows), processing_class=processor
    )
    trainer.train()
    assert trainer.state.global_step == 2
    assert collator.skipped_samples == {"bad_media": 1, "too_long": 0}
    assert sorted(losses(trainer))[0] == 0.0  # the step whose only sample was skipped trained on nothing


def test_qlora_trains_only_lora_adapters_outside_the_vision_tower(tmp_path, data, model_dir):
    pytest.importorskip("bitsandbytes")
    parser = sft.make_parser()
    argv = ["--config", str(TINY_RECIPE), "--model_name_or_path", model_dir, "--dataset_name", data["jsonl"]]
    argv += ["--media_root", data["root"], "--output_dir", str(tmp_path / "qlora"), "--max_steps", "2"]
    argv += ["--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1", "--save_strategy", "no"]
    argv += ["--load_in_4bit", "--use_peft", "--lora_r", "4", "--freeze_vision_tower"]
    trainer = sft.build_trainer(*parser.parse_args_and_config(argv))
    model = trainer.model
    assert type(model.get_submodule("base_model.model.model.language_model.layers.0.mlp.down_proj.base_layer"))
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable and all(".lora_" in name for name in trainable)
    assert not any(".visual." in name for name in trainable)  # --freeze_vision_tower: no adapter in the tower
    assert any("language_model" in name and "mlp" in name for name in trainable)  # all-linear by default
    before = snapshot(model)
    trainer.train()
    after = dict(model.named_parameters())
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == trainable
    assert torch.isfinite(torch.tensor(losses(trainer))).all()
    assert (
        "Linear4bit"
        in type(model.get_submodule(next(iter(trainable)).rsplit(".lora_", 1)[0] + ".base_layer")).__name__
    )


def test_peft_config_places_adapters_in_the_vision_tower_unless_frozen():
    from peft import get_peft_model
    from trl import ModelConfig

    model_args = ModelConfig(use_peft=True, lora_r=4, lora_target_modules=["qkv", "q_proj"])
    for freeze, expect_visual in ((False, True), (True, False)):
        model, _ = build_tiny_vlm("qwen2_5_vl")
        config = sft.peft_config_for(model_args, model, freeze_vision_tower=freeze)
        names = [name for name, _ in get_peft_model(model, config).named_parameters() if ".lora_" in name]
        assert any(".visual." in name for name in names) == expect_visual
        assert any(".language_model." in name for name in names)


def test_cli_saves_model_and_processor_and_resumes(tmp_path, data, model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from videorft_hf.cli import main as cli

    out = tmp_path / "run"
    argv = ["sft", "--config", str(TINY_RECIPE), "--model_name_or_path", model_dir, "--dataset_name", data["jsonl"]]
    argv += ["--media_root", data["root"], "--output_dir", str(out), "--save_steps", "1"]
    argv += ["--gradient_accumulation_steps", "1"]
    assert cli([*argv, "--max_steps", "2"]) == 0
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= set(os.listdir(out))
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert sft.resolve_checkpoint("last", str(out)) == str(out / "checkpoint-2")

    # Extended to 3 steps, the run goes on from checkpoint-2: steps 1-2 keep the learning rates of the 2-step schedule
    # (a fresh 3-step run would log others) and Adam's state counts 3 steps (a fresh optimizer would count 1). An
    # interrupted run against an uninterrupted one, weights and all: test_resume.py.
    assert cli([*argv, "--max_steps", "3", "--resume_from_checkpoint", "last"]) == 0
    history = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["log_history"]
    rates = {entry["step"]: entry["learning_rate"] for entry in history if "learning_rate" in entry}
    assert rates[2] == pytest.approx(5e-4) and sorted(rates) == [1, 2, 3]
    adam = torch.load(out / "checkpoint-3" / "optimizer.pt", weights_only=True)["state"]
    assert {int(entry["step"]) for entry in adam.values()} == {3}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_accelerate_launch_two_processes_on_cpu(tmp_path, data, model_dir):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    command += ["--config_file", str(REPO / "recipes" / "accelerate_configs" / "ddp.yaml"), "--num_processes", "2"]
    command += ["--mixed_precision", "no", "--main_process_port", str(_free_port())]
    command += ["-m", "videorft_hf.scripts.sft", "--config", str(TINY_RECIPE), "--model_name_or_path", model_dir]
    command += ["--dataset_name", data["jsonl"], "--media_root", data["root"], "--output_dir", str(out)]
    command += ["--max_steps", "2", "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1"]
    command += ["--dataloader_num_workers", "1", "--save_steps", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Process 0 of 2 (MULTI_CPU)" in output and "Process 1 of 2 (MULTI_CPU)" in output
    assert "'loss'" in output and "nan" not in output.split("'loss'", 1)[1].split(",", 1)[0]
    assert (out / "model.safetensors").is_file() and (out / "processor_config.json").is_file()
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2


def test_recipes_parse_with_the_paper_values():
    from accelerate.commands.config.config_args import load_config_from_file

    recipes = REPO / "recipes" / "Qwen2.5-VL-7B-Instruct" / "sft"
    parser = sft.make_parser()
    script_args, args, model_args = parser.parse_args_and_config(
        ["--config", str(recipes / "config_videorft.yaml"), "--use_cpu"]  # bf16 needs --use_cpu on a CPU host
    )
    assert (args.learning_rate, args.num_train_epochs, args.max_grad_norm) == (1e-6, 1, 5.0)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (1, 2)
    assert args.bf16 and args.activation_checkpointing and not args.remove_unused_columns
    assert args.sampling_config() == VideoSFTConfig(output_dir="x", use_cpu=True).sampling_config()  # videorft-train
    assert model_args.model_name_or_path == "Qwen/Qwen2.5-VL-7B-Instruct" and not model_args.use_peft
    script_args, args, model_args = parser.parse_args_and_config(
        ["--config", str(recipes / "config_qlora.yaml"), "--use_cpu"]
    )
    assert model_args.load_in_4bit and model_args.use_peft and not script_args.freeze_vision_tower  # adapts the tower
    for name, kind in (("ddp", "MULTI_GPU"), ("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED"), ("fsdp", "FSDP")):
        config = load_config_from_file(str(REPO / "recipes" / "accelerate_configs" / f"{name}.yaml"))
        assert config.distributed_type == kind
    zero2 = load_config_from_file(str(REPO / "recipes" / "accelerate_configs" / "zero2.yaml"))
    assert zero2.deepspeed_config["zero_stage"] == 2


def test_a_qwen3_vl_sft_run_record_states_the_sampling_that_ran(tmp_path, data):
    """Regression: the SFT run record stated the config's sampling (multiples of 28) while the collator decoded
    Qwen3-VL video in multiples of its vision tower's 32."""
    from videorft_hf.run_record import build_run_record
    from videorft_hf.sft_trainer import VideoSFTTrainer

    model, processor = build_tiny_vlm("qwen3_vl")
    args = sft_args(tmp_path, max_steps=1)
    rows = load_videorft_dataset(data["jsonl"], media_root=data["root"], include_target=True)
    collator = DataCollatorForVideoLanguageModeling.from_config(processor, args)
    trainer = VideoSFTTrainer(model, args=args, data_collator=collator, train_dataset=rows, processing_class=processor)
    trainer.train()
    side = processor.video_processor.patch_size * processor.video_processor.merge_size
    record = build_run_record("sft", trainer, None, args, None)
    assert side == 32 and record["sampling"]["patch_factor"] == side == collator.sampling_config.patch_factor
    assert record["sampling"]["max_frames"] == 4 and record["training_args"]["trainable_dtype"] == "float32"


def test_checkpointing_uses_transformers_current_name_and_the_old_one_still_works():
    """trl defaults `gradient_checkpointing` to True, which transformers >= 5.25 reads as its deprecated alias in
    every run; the package's configs default the current name, `activation_checkpointing`, to trl's value (on) and warn
    about nothing, while a recipe that writes the old name keeps working (transformers then names the new one)."""
    import contextlib
    import dataclasses
    import warnings

    from transformers import TrainingArguments

    from videorft_hf.configs import VideoGRPOConfig

    # transformers < 5.25 has only the old name, and nothing to warn about.
    renamed = "activation_checkpointing" in {f.name for f in dataclasses.fields(TrainingArguments)}
    for config_class in (VideoSFTConfig, VideoGRPOConfig):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any warning fails
            args = config_class(output_dir="x", use_cpu=True, report_to=[])
        assert args.activation_checkpointing is True and args.gradient_checkpointing is True  # trl's default: on
        off = config_class(output_dir="x", use_cpu=True, report_to=[], activation_checkpointing=False)
        assert off.activation_checkpointing is False and off.gradient_checkpointing is False
        with pytest.warns(FutureWarning, match="Use `activation_checkpointing` instead") if renamed else contextlib.nullcontext():
            old = config_class(output_dir="x", use_cpu=True, report_to=[], gradient_checkpointing=False)
        assert old.activation_checkpointing is False and old.gradient_checkpointing is False
    for recipe in sorted((REPO / "recipes").rglob("*.yaml")):
        assert "gradient_checkpointing:" not in recipe.read_text(), recipe  # the recipes use the current name


def test_qlora_run_card_states_what_ran(tmp_path, data, model_dir):
    """`videorft sft` with 4-bit QLoRA records the run; the card names the adapter's base and the values that ran."""
    pytest.importorskip("bitsandbytes")
    from huggingface_hub import ModelCard

    from videorft_hf.hub import CheckpointError, push_model

    out = tmp_path / "qlora"
    argv = ["--config", str(TINY_RECIPE), "--model_name_or_path", model_dir, "--dataset_name", data["jsonl"]]
    argv += ["--media_root", data["root"], "--output_dir", str(out), "--max_steps", "1", "--learning_rate", "2e-5"]
    argv += ["--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1", "--save_strategy", "no"]
    argv += ["--load_in_4bit", "--use_peft", "--lora_r", "4", "--freeze_vision_tower"]
    assert sft.main(argv) == 0
    run = json.loads((out / "videorft_run.json").read_text())
    assert (run["stage"], run["checkpoint"], run["quantization"]) == ("sft", "adapter", "4-bit nf4")
    assert run["training_args"]["learning_rate"] == 2e-5 and run["global_step"] == 1 and run["train_rows"] == 4
    trl_card = (out / "README.md").read_text()  # the trainer's own card: the VideoRFT card, not trl's generic one
    assert "Trained from" not in trl_card and f"`{model_dir}`" in trl_card and "base model None" not in trl_card

    with pytest.raises(CheckpointError, match="run record .* Drop recipe"):
        push_model(out, "you/x", recipe={"model_name_or_path": "Qwen/Qwen2.5-VL-7B-Instruct"}, dry_run=True)
    repo = push_model(out, "you/VideoRFT-qlora", dry_run=True, output_dir=tmp_path / "repo").folder
    card = ModelCard.load(repo / "README.md")
    assert card.data.library_name == "peft" and card.data.base_model is None  # a local base: named, not linked
    text = card.text
    for expected in (
        f"A LoRA adapter for `{model_dir}` (a local model folder)",
        f"| Base model | `{model_dir}` |",
        "| Base weights in training | 4-bit nf4 (QLoRA) |",
        "learning_rate 2e-05",
        "max_steps 1",
        "| Optimizer steps | 1 (epoch",
        "| Training rows | 4 |",
        "preset `video-r1-train` as run: 4 frames at 2 fps, 3136 pixels per frame",
        "| System prompt | none |",
        "1x CPU process",
    ):
        assert expected in text, expected
    for placeholder in ("not recorded", "not given", "(#)", "<base model id>"):
        assert placeholder not in text
