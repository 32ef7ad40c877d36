"""Resume restores exactly what was saved: weights (the float32 trainable ones bit for bit), optimizer, scheduler, RNG
and step, for `videorft sft` and `videorft grpo`, full fine-tuning, LoRA and QLoRA, Qwen2-VL, Qwen2.5-VL and Qwen3-VL,
one process and DDP; a finished run resumed again trains nothing.

Each case trains N steps straight through with the real command (a checkpoint after every step), then resumes a copy
of an early checkpoint in a new process (`python -m videorft_hf.cli ... --resume_from_checkpoint last`) and requires
the resumed run to end with the uninterrupted run's weights, optimizer and scheduler, tensor for tensor. The models
load in bfloat16 with bf16 autocast at the recipes' learning rates (1e-6 full, 1e-5 LoRA and QLoRA), as users train
them; trainable weights are float32 (`modeling.keep_updates`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from videorft_hf.testing import build_tiny_vlm, make_record, save_tiny_vlm, write_test_video

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FULL_LR, LORA_LR = "1e-6", "1e-5"
TIMEOUT = 600


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Four video rows with both CoT (`process`) and RL fields, and their mp4 files (4 frames of 56x56)."""
    root = tmp_path_factory.mktemp("resume")
    records = []
    for i in range(4):
        write_test_video(root / "media" / f"clip{i}.mp4", num_frames=4 + 2 * i, fps=2.0, width=56, height=56)
        record = make_record(i, "multiple choice", "A", f"./media/clip{i}.mp4", options=["A. circle", "B. square"])
        records.append({**record, "process": f"<think>Clip {i} starts with the circle.</think>"})
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"jsonl": str(root / "rows.jsonl"), "root": str(root)}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    made = {}

    def model(family: str) -> str:
        if family not in made:
            made[family] = str(save_tiny_vlm(family, root / family))
        return made[family]

    return model


def argv(command: str, model: str, data: dict, out: Path, mode: str, *extra: str) -> list[str]:
    """The real command line of a tiny run: bf16 weights, bf16 autocast, the recipe's learning rates."""
    args = [command, "--config", str(REPO / "recipes" / "tiny" / f"{command}.yaml"), "--model_name_or_path", model]
    args += ["--dataset_name", data["jsonl"], "--media_root", data["root"], "--output_dir", str(out)]
    args += ["--dtype", "bfloat16", "--bf16", "true", "--save_steps", "1", "--logging_steps", "1"]
    args += ["--learning_rate", FULL_LR if mode == "full" else LORA_LR]
    if command == "sft":  # 2 steps per epoch over the 4 rows
        args += ["--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1"]
    else:  # one prompt and its 2 completions per step, a reward that differs within the group (tests/cpu_launch.py)
        args += ["--per_device_train_batch_size", "2", "--num_generations", "2", "--max_completion_length", "4"]
        args += ["--length_bonus", "false", "--reward_funcs", "accuracy_reward", "cpu_launch.completion_length_reward"]
    if mode != "full":
        args += ["--use_peft", "--lora_r", "4", "--lora_target_modules", "all-linear"]
    if mode == "qlora":
        args += ["--load_in_4bit"]
    return [*args, *extra]


def env() -> dict:
    # The same intra-op threads as this process: the straight run here and the resumed one must reduce alike.
    # tests/ on the path: the GRPO runs' reward is tests/cpu_launch.py's.
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(torch.get_num_threads()),
            "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


def run_command(args: list[str], cwd: Path) -> str:
    """`python -m videorft_hf.cli ARGS` in a new process; returns its output, asserting exit status 0."""
    result = subprocess.run(
        [sys.executable, "-m", "videorft_hf.cli", *args], capture_output=True, text=True, env=env(), cwd=cwd,
        timeout=TIMEOUT,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


def weights_file(folder: Path) -> Path:
    adapter = folder / "adapter_model.safetensors"
    return adapter if adapter.is_file() else folder / "model.safetensors"


def assert_same_tensors(expected: dict, got: dict, what: str) -> None:
    assert expected.keys() == got.keys(), f"{what}: {sorted(expected.keys() ^ got.keys())[:5]}"
    differ = {}
    for name, tensor in expected.items():
        if not torch.equal(tensor, got[name]):
            differ[name] = (tensor.double() - got[name].double()).abs().max().item()
    assert not differ, f"{what} differ (max abs difference): {dict(list(differ.items())[:5])}"


def optimizer_tensors(checkpoint: Path) -> dict:
    state = torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True)["state"]
    return {f"{index}.{key}": value for index, entry in state.items() for key, value in entry.items()}


def losses(folder: Path) -> dict:
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def straight_and_resumed(command, family, mode, data, models, tmp_path, steps: int, resume_at: int = 1):
    """N steps straight through (in this process, the real command), then the run resumed in a new process from a
    copy of its checkpoint at `resume_at`. Returns (straight output folder, resumed output folder)."""
    from videorft_hf.cli import main as cli

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert cli(argv(command, models(family), data, straight, mode, "--max_steps", str(steps))) == 0
    resumed.mkdir()
    shutil.copytree(straight / f"checkpoint-{resume_at}", resumed / f"checkpoint-{resume_at}")
    output = run_command(
        argv(command, models(family), data, resumed, mode, "--max_steps", str(steps), "--resume_from_checkpoint", "last"),
        tmp_path,
    )
    assert "missing keys" not in output and "unexpected keys" not in output
    return straight, resumed


def assert_resumed_exactly(straight: Path, resumed: Path, steps: int, resume_at: int = 1) -> None:
    final = load_file(weights_file(straight))
    # Trainable weights were trained and saved in float32 (bf16 would round a 1e-6 step away), and they moved after
    # the resume point: the comparison below is between trained weights, not two copies of the checkpoint.
    trainable = {name: t for name, t in final.items() if t.dtype == torch.float32}
    assert trainable and (len(trainable) == len(final) or ".lora_" in next(iter(trainable)))
    at_resume = load_file(weights_file(straight / f"checkpoint-{resume_at}"))
    assert any(not torch.equal(at_resume[name], tensor) for name, tensor in trainable.items())
    assert_same_tensors(final, load_file(weights_file(resumed)), "final weights")
    last = f"checkpoint-{steps}"
    assert_same_tensors(optimizer_tensors(straight / last), optimizer_tensors(resumed / last), "optimizer state")
    scheduler = [torch.load(f / last / "scheduler.pt", weights_only=True) for f in (straight, resumed)]
    assert scheduler[0]["last_epoch"] == scheduler[1]["last_epoch"] == steps
    assert scheduler[0]["_last_lr"] == scheduler[1]["_last_lr"]
    assert not (resumed / f"checkpoint-{resume_at - 1}").exists() or resume_at == 1
    expected, got = losses(straight / last), losses(resumed / last)
    assert sorted(got) == list(range(1, steps + 1)) and all(got[s] == expected[s] for s in range(resume_at + 1, steps + 1))


# The matrix: (command, mode, family). The default suite runs a representative set; the rest is `slow`.
DEFAULT_CASES = {
    ("sft", "full", "qwen2_5_vl"),
    ("grpo", "lora", "qwen2_5_vl"),
    ("sft", "qlora", "qwen2_5_vl"),
    ("sft", "full", "qwen2_vl"),
    ("grpo", "full", "qwen3_vl"),
}
CASES = [
    pytest.param(command, mode, family, marks=() if (command, mode, family) in DEFAULT_CASES else pytest.mark.slow)
    for command in ("sft", "grpo")
    for mode in ("full", "lora", "qlora")
    for family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
]


@pytest.mark.parametrize(("command", "mode", "family"), CASES)
def test_interrupted_run_resumed_in_a_new_process_ends_as_the_uninterrupted_run(
    command, mode, family, data, models, tmp_path
):
    if mode == "qlora":
        pytest.importorskip("bitsandbytes")
    steps = 3 if command == "sft" else 2  # SFT: resumed mid-epoch, then across the epoch boundary
    straight, resumed = straight_and_resumed(command, family, mode, data, models, tmp_path, steps)
    assert_resumed_exactly(straight, resumed, steps)


def test_a_finished_run_resumed_again_trains_nothing(data, models, tmp_path, caplog):
    """After `--max_steps 3` (step 3 is the first of the second epoch, where transformers would run one more step
    before checking max_steps), resuming the finished run trains no step, says so, exits 0 and leaves the model as
    trained."""
    from videorft_hf.cli import main as cli

    out = tmp_path / "run"
    args = [*argv("sft", models("qwen2_5_vl"), data, out, "full"), "--max_steps", "3"]
    assert cli(args) == 0
    trained = load_file(out / "model.safetensors")
    with caplog.at_level("WARNING", logger="videorft_hf.checkpoints"):
        assert cli([*args, "--resume_from_checkpoint", "last"]) == 0
    assert f"Nothing to train: {out / 'checkpoint-3'} is at step 3 and the run ends at step 3." in caplog.text
    assert not (out / "checkpoint-4").exists()
    assert_same_tensors(trained, load_file(out / "model.safetensors"), "weights after the finished resume")
    assert json.loads((out / "videorft_run.json").read_text())["global_step"] == 3


def test_load_best_model_at_end_reads_the_checkpoint_as_saved(data, models, tmp_path):
    """`load_best_model_at_end` reads a checkpoint through the same loader: the best checkpoint's values come back
    (transformers' own read kept the current weights but the output layer)."""
    from videorft_hf.scripts import sft

    args = argv("sft", models("qwen2_5_vl"), data, tmp_path / "out", "full")[1:]
    trainer = sft.build_trainer(*sft.make_parser().parse_args_and_config(args))
    with torch.no_grad():
        for parameter in trainer.model.parameters():
            parameter.add_(1e-3)
    best = tmp_path / "out" / "checkpoint-7"
    trainer.save_model(str(best))
    saved = {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}
    with torch.no_grad():
        for parameter in trainer.model.parameters():
            parameter.add_(1e-3)
    trainer.state.best_model_checkpoint = str(best)
    trainer._load_best_model()
    assert_same_tensors(saved, trainer.model.state_dict(), "weights of the best checkpoint")


# ------------------------------------------------------------------------------------------------ the loader
def test_checkpoint_keys_are_mapped_as_from_pretrained_maps_them_and_every_value_comes_back(tmp_path):
    """A Qwen2.5-VL checkpoint is written in the original key format (`visual.*`, `model.layers.*`); loading it into
    a model with other weights restores every tensor: float32 ones bit for bit, bf16 ones as saved."""
    from videorft_hf.checkpoints import load_checkpoint_weights

    model, _ = build_tiny_vlm("qwen2_5_vl", seed=1)
    model.to(torch.bfloat16)
    for parameter in model.model.language_model.parameters():  # trained weights in float32, the rest bf16
        parameter.data = parameter.data.float() + 1e-7
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert any(k.startswith("visual.") for k in saved) and not any(k.startswith("model.visual.") for k in saved)

    fresh, _ = build_tiny_vlm("qwen2_5_vl", seed=2)
    fresh.to(torch.bfloat16)
    for parameter in fresh.model.language_model.parameters():
        parameter.data = parameter.data.float()
    loaded = load_checkpoint_weights(fresh, tmp_path)
    assert len(loaded) == len(saved)
    assert_same_tensors(model.state_dict(), fresh.state_dict(), "loaded weights")
    assert {p.dtype for p in fresh.model.language_model.parameters()} == {torch.float32}


def test_a_checkpoint_that_does_not_match_is_an_error_naming_it_and_its_keys(tmp_path):
    from videorft_hf.checkpoints import CheckpointMismatchError, load_checkpoint_weights

    model, _ = build_tiny_vlm("qwen2_5_vl")
    model.save_pretrained(tmp_path / "ok")
    saved = load_file(tmp_path / "ok" / "model.safetensors")
    before = {k: v.clone() for k, v in model.state_dict().items()}

    broken = tmp_path / "broken"
    broken.mkdir()
    tensors = dict(saved)
    tensors.pop("visual.merger.ln_q.weight")
    tensors["visual.extra.weight"] = torch.zeros(2)
    save_file(tensors, broken / "model.safetensors")
    with pytest.raises(CheckpointMismatchError) as error:
        load_checkpoint_weights(model, broken)
    message = str(error.value)
    assert message.startswith(f"{broken}: the checkpoint does not match the model being resumed")
    assert "1 model weights are not in it: model.visual.merger.ln_q.weight" in message
    assert "1 of its weights are not in the model: model.visual.extra.weight" in message
    assert_same_tensors(before, model.state_dict(), "weights after a refused load")  # nothing was loaded

    # float32 values into a bfloat16 model would be rounded: refused, naming the weights.
    model.to(torch.bfloat16)
    with pytest.raises(CheckpointMismatchError, match=r"would be rounded to a lower precision: .*float32 saved, "
                                                      r"bfloat16 in the model"):
        load_checkpoint_weights(model, tmp_path / "ok")


def test_a_tied_output_layer_is_not_missing(tmp_path):
    """save_pretrained writes a tied weight once: the output layer comes back with the embeddings."""
    from videorft_hf.checkpoints import load_checkpoint_weights

    model, _ = build_tiny_vlm("qwen2_5_vl", seed=1)
    model.config.tie_word_embeddings = model.config.get_text_config().tie_word_embeddings = True
    model.tie_weights()
    model.save_pretrained(tmp_path)
    assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")
    fresh, _ = build_tiny_vlm("qwen2_5_vl", seed=2)
    fresh.config.tie_word_embeddings = fresh.config.get_text_config().tie_word_embeddings = True
    fresh.tie_weights()
    load_checkpoint_weights(fresh, tmp_path)
    assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)


def test_a_converter_mapping_is_inverted_too(tmp_path):
    """Qwen3-VL-MoE's mapping converts its expert weights (a transpose, not only a renaming): the load runs the
    converter as from_pretrained does, and every tensor comes back."""
    from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration
    from transformers.core_model_loading import WeightConverter

    from videorft_hf.checkpoints import load_checkpoint_weights

    config = Qwen3VLMoeConfig(
        text_config=dict(hidden_size=32, intermediate_size=32, moe_intermediate_size=8, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, num_experts=2,
                         num_experts_per_tok=1, vocab_size=128, rope_scaling={"rope_type": "default",
                         "mrope_section": [2, 3, 3], "mrope_interleaved": True}),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=32,
                           deepstack_visual_indexes=[0]),
    )
    torch.manual_seed(0)
    Qwen3VLMoeForConditionalGeneration(config).save_pretrained(tmp_path / "base")
    # Loaded with from_pretrained, the model holds the conversion it was loaded with, and saving reverts it.
    model = Qwen3VLMoeForConditionalGeneration.from_pretrained(tmp_path / "base")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 1e-3)
    model.save_pretrained(tmp_path / "trained")
    assert any(isinstance(c, WeightConverter) for c in model._weight_conversions)
    fresh = Qwen3VLMoeForConditionalGeneration.from_pretrained(tmp_path / "base")
    load_checkpoint_weights(fresh, tmp_path / "trained")
    assert_same_tensors(model.state_dict(), fresh.state_dict(), "loaded weights")


# ------------------------------------------------------------------------------------------------ DDP
def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_ddp(args: list[str], cwd: Path) -> str:
    """`accelerate launch` of the command on two CPU processes through the recipe's DDP config, bf16 autocast."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "recipes" / "accelerate_configs" / "ddp.yaml"), "--num_processes", "2",
               "--mixed_precision", "bf16", "--main_process_port", str(_free_port()),
               "-m", f"videorft_hf.scripts.{args[0]}", *args[1:]]
    result = subprocess.run(command, capture_output=True, text=True, env=env(), cwd=cwd, timeout=TIMEOUT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "Process 1 of 2 (MULTI_CPU)" in output
    return output


@pytest.mark.distributed
@pytest.mark.parametrize(
    ("command", "mode"), [("sft", "full"), pytest.param("grpo", "lora", marks=pytest.mark.slow)]
)
def test_ddp_run_resumed_on_two_processes_ends_as_the_uninterrupted_run(command, mode, data, models, tmp_path):
    """Two CPU processes, one sample (SFT) or one prompt and its 2 completions (GRPO) each per step. The SFT run also
    skips a sample (`clip3.mp4` is missing from its media root): the run record counts it once over both processes,
    and the resumed run's record, which starts from the checkpoint's count, says the same."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    steps, extra = 2, []
    if command == "sft":
        media = tmp_path / "one_missing"
        shutil.copytree(data["root"], media)
        (media / "media" / "clip3.mp4").unlink()
        data = {**data, "root": str(media)}
        extra = ["--per_device_train_batch_size", "1", "--on_bad_sample", "skip", "--max_skipped_fraction", "0.5"]
    launch_ddp([*argv(command, models("qwen2_5_vl"), data, straight, mode, "--max_steps", str(steps)), *extra], tmp_path)
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-1", resumed / "checkpoint-1")
    args = argv(command, models("qwen2_5_vl"), data, resumed, mode, "--max_steps", str(steps))
    output = launch_ddp([*args, *extra, "--resume_from_checkpoint", "last"], tmp_path)
    assert "missing keys" not in output and "unexpected keys" not in output
    assert_resumed_exactly(straight, resumed, steps)
    if command == "sft":  # 2 steps of 2 samples (one per process), clip3's skipped once
        for folder in (straight, resumed):
            record = json.loads((folder / "videorft_run.json").read_text())
            assert record["skipped_samples"] == {"samples": 4, "skipped": 1, "by_reason": {"bad_media": 1}}
