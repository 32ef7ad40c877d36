"""Beyond one process: FSDP2 through the recipe's accelerate config, and two "machines" on loopback.

Every run here is `accelerate launch` of the real commands on CPU processes (gloo), a tiny Qwen2.5-VL and real mp4
files of 4 frames at 56x56. The FSDP runs load the model in bfloat16 with `bf16: true` at the paper's learning rate
(1e-6), as users train it. `make test` runs the FSDP and two-machine tests; `make test-distributed` runs these and
the DeepSpeed ones (`pip install -e ".[deepspeed]"`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from videorft_hf.testing import make_record, save_tiny_vlm, write_test_video

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONFIGS = REPO / "recipes" / "accelerate_configs"
TIMEOUT = 300


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Four video rows with both CoT (`process`) and RL fields, their mp4 files and a tiny model."""
    root = tmp_path_factory.mktemp("distributed")
    records = []
    for i in range(4):
        write_test_video(root / "media" / f"clip{i}.mp4", num_frames=4, fps=2.0, width=56, height=56)
        record = make_record(i, "multiple choice", "A", f"./media/clip{i}.mp4", options=["A. circle", "B. square"])
        records.append({**record, "process": f"<think>Clip {i} starts with the circle.</think>"})
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"jsonl": str(root / "rows.jsonl"), "root": str(root), "model": str(save_tiny_vlm("qwen2_5_vl", root / "model"))}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra) -> dict:
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)  # tests/cpu_launch.py's reward
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path,
            **extra}


def _command_args(command: str, data: dict, output_dir: Path, *extra: str) -> list[str]:
    args = ["--config", str(REPO / "recipes" / "tiny" / f"{command}.yaml"), "--model_name_or_path", data["model"]]
    args += ["--dataset_name", data["jsonl"], "--media_root", data["root"], "--output_dir", str(output_dir)]
    if command == "sft":
        args += ["--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1"]
    else:  # one prompt and its 4 completions per process; a reward that differs within the group
        args += ["--per_device_train_batch_size", "4", "--max_completion_length", "8"]
        args += ["--reward_funcs", "accuracy_reward", "cpu_launch.completion_length_reward"]
    return [*args, *extra]


def _run(command: list[str], cwd: Path, env: dict, fails: bool = False) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=TIMEOUT, cwd=cwd)
    output = result.stdout + result.stderr
    assert (result.returncode != 0) if fails else (result.returncode == 0), output[-6000:]
    return output


def _launch(
    config: str, command: str, data: dict, output_dir: Path, *extra: str, processes: int = 2, launch_flags=(),
    fails: bool = False,
) -> str:
    """`accelerate launch` with a recipe's accelerate config on two CPU processes (or GPUs), the model in bf16 with
    bf16 mixed precision at lr 1e-6, two steps, a checkpoint after each."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / f"{config}.yaml")]
    launch += ["--num_processes", str(processes), "--main_process_port", str(_free_port()), *launch_flags]
    args = _command_args(command, data, output_dir, "--dtype", "bfloat16", "--bf16", "true")
    args += ["--learning_rate", "1e-6", "--max_steps", "2", "--save_steps", "1", *extra]
    env = _env()
    if config.startswith("zero") or torch.cuda.is_available():
        args += ["--use_cpu", "false"]  # a GPU, or DeepSpeed's CPU accelerator (accelerate drops DeepSpeed under use_cpu)
    if not torch.cuda.is_available():
        env["DS_ACCELERATOR"] = "cpu"
    return _run([*launch, str(HERE / "cpu_launch.py"), command, *args], output_dir.parent, env, fails)


def _fsdp_weights(checkpoint: Path) -> dict:
    """The full weights FSDP held at a checkpoint (the recipe's FULL_STATE_DICT), fp32."""
    return torch.load(checkpoint / "pytorch_model_fsdp.bin", map_location="cpu", weights_only=True)


def _deepspeed_weights(checkpoint: Path) -> dict:
    """The fp32 master weights of a DeepSpeed checkpoint, gathered from its ZeRO shards."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))


def _check_runs(data: dict, run: Path, resumed: Path, weights_at) -> None:
    """The four checks of a sharded run: both towers move, bf16 at lr 1e-6 keeps its updates, the saved model loads
    in one process with the weights the run held, and a resumed run ends where the uninterrupted one did."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    # One step at lr 1e-6 from bf16 weights moves >= 90% of every tensor, in the vision tower and the language model.
    # Input embeddings: the rows of tokens every sample holds (a row no sample uses gets no gradient).
    initial = AutoModelForImageTextToText.from_pretrained(data["model"], dtype=torch.bfloat16)
    after_one = weights_at(run / "checkpoint-1")
    tokenizer = AutoTokenizer.from_pretrained(data["model"])
    used_rows = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"])
    embeddings = initial.get_input_embeddings().weight
    changed = {}
    for name, p in initial.named_parameters():
        before, after = p.detach().float(), after_one[name].float()
        if p is embeddings:
            before, after = before[used_rows], after[used_rows]
        changed[name] = (after != before).float().mean().item()
    assert any(n.startswith("model.visual.") for n in changed) and any(".language_model." in n for n in changed)
    stuck = {name: round(fraction, 3) for name, fraction in changed.items() if fraction < 0.9}
    assert not stuck, f"tensors whose updates were (mostly) lost after one bf16 step at lr 1e-6: {stuck}"

    # The saved model loads in a single process with the weights the run held at its last step (in the saved dtype).
    loaded = AutoModelForImageTextToText.from_pretrained(run).state_dict()
    held = weights_at(run / "checkpoint-2")
    assert set(held) <= set(loaded)
    different = [k for k, v in held.items() if not torch.equal(loaded[k], v.to(loaded[k].dtype))]
    assert not different, different

    # Resumed from the sharded checkpoint of step 1, step 2 ends where the uninterrupted run ended (optimizer and
    # scheduler state restored, not restarted).
    assert not (resumed / "checkpoint-1").exists()  # step 1 was not run again
    state = json.loads((resumed / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2]
    expected, got = load_file(run / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == got.keys()
    mismatched = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not mismatched, mismatched


@pytest.mark.distributed
@pytest.mark.parametrize("command", ["sft", "grpo"])
def test_fsdp2_on_two_cpu_processes_trains_bf16_saves_and_resumes(command, data, tmp_path):
    run, resumed = tmp_path / "run", tmp_path / "resumed"
    output = _launch("fsdp", command, data, run)
    assert "Process 0 of 2 (FSDP)" in output and "Process 1 of 2 (FSDP)" in output
    _launch("fsdp", command, data, resumed, "--resume_from_checkpoint", str(run / "checkpoint-1"))
    _check_runs(data, run, resumed, _fsdp_weights)


@pytest.mark.distributed
def test_fsdp2_refuses_the_rollout_engine_before_training(data, tmp_path):
    """Each FSDP process holds a shard of the weights, which the rollout engine cannot generate with: asking for it
    is a typed error on every process before the first step, not a fallback."""
    run = tmp_path / "run"
    output = _launch("fsdp", "grpo", data, run, "--generation_engine", "compiled", fails=True)
    assert output.count("GenerationEngineError") >= 2 and "sharded parameters (FSDP or DeepSpeed ZeRO-3)" in output
    assert not (run / "checkpoint-1").exists()


@pytest.mark.distributed
def test_fsdp2_sharded_checkpoints_resume_and_the_final_model_is_saved_whole(data, tmp_path):
    """With `fsdp_state_dict_type: SHARDED_STATE_DICT` each process writes its own shards into the checkpoints; the
    run resumes from them, and the model of output_dir is still saved whole (transformers saves none otherwise)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    sharded = ("--fsdp_state_dict_type", "SHARDED_STATE_DICT")
    run, resumed = tmp_path / "run", tmp_path / "resumed"
    _launch("fsdp", "sft", data, run, launch_flags=sharded)
    assert (run / "checkpoint-1" / "pytorch_model_fsdp_0").is_dir()
    assert not (run / "checkpoint-1" / "model.safetensors").exists()
    _launch("fsdp", "sft", data, resumed, "--resume_from_checkpoint", str(run / "checkpoint-1"), launch_flags=sharded)
    assert not (resumed / "checkpoint-1").exists()
    expected, got = load_file(run / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    AutoModelForImageTextToText.from_pretrained(resumed)
    AutoProcessor.from_pretrained(resumed)


@pytest.mark.slow  # and DeepSpeed's first CPU run compiles its shared-memory op (minutes, cached afterwards)
@pytest.mark.distributed
@pytest.mark.parametrize(("config", "command"), [("zero2", "sft"), ("zero3", "grpo")])
def test_deepspeed_on_two_cpu_processes_trains_bf16_saves_and_resumes(config, command, data, tmp_path):
    pytest.importorskip("deepspeed")
    run, resumed = tmp_path / "run", tmp_path / "resumed"
    output = _launch(config, command, data, run)
    assert "Process 0 of 2 (DEEPSPEED)" in output and "Process 1 of 2 (DEEPSPEED)" in output
    _launch(config, command, data, resumed, "--resume_from_checkpoint", str(run / "checkpoint-1"))
    _check_runs(data, run, resumed, _deepspeed_weights)


@pytest.mark.gpu
def test_deepspeed_zero3_grpo_on_one_gpu_gathers_generates_saves_and_resumes(data, tmp_path):
    """The recipe's ZeRO-3 config on one GPU: parameters gathered for generation, the reference model, the 16-bit
    save and the resume, as in the CPU test."""
    pytest.importorskip("deepspeed")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    run, resumed = tmp_path / "run", tmp_path / "resumed"
    output = _launch("zero3", "grpo", data, run, processes=1)
    assert "Process 0 of 1 (DEEPSPEED)" in output
    _launch("zero3", "grpo", data, resumed, "--resume_from_checkpoint", str(run / "checkpoint-1"), processes=1)
    _check_runs(data, run, resumed, _deepspeed_weights)


@pytest.mark.distributed
def test_two_machines_on_loopback_train_two_grpo_steps(data, tmp_path):
    """Two launchers, one process each, as machine 0 and machine 1 of the multi-node recipe's config."""
    port, out, reward_log = _free_port(), tmp_path / "run", tmp_path / "rewards"
    reward_log.mkdir()
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "multinode.yaml")]
    launch += ["--num_machines", "2", "--num_processes", "2", "--main_process_ip", "127.0.0.1"]
    launch += ["--main_process_port", str(port), "--mixed_precision", "no"]
    args = _command_args("grpo", data, out, "--max_steps", "2", "--save_steps", "2")
    env = _env(VIDEORFT_TEST_REWARD_LOG=str(reward_log))
    machines = [
        subprocess.Popen(
            [*launch, "--machine_rank", str(rank), "-m", "videorft_hf.scripts.grpo", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
        )
        for rank in (0, 1)
    ]
    try:
        outputs = [machine.communicate(timeout=TIMEOUT)[0] for machine in machines]
    finally:
        for machine in machines:
            machine.kill()
    for machine, output in zip(machines, outputs, strict=True):
        assert machine.returncode == 0, output[-6000:]
    # The rendezvous: machine r runs global process r of 2.
    assert "Process 0 of 2 (MULTI_CPU)" in outputs[0] and "Process 1 of 2 (MULTI_CPU)" in outputs[1]

    # Each machine scored its own prompt's 4 completions at each step: the data were sharded by rank.
    scored = [
        [json.loads(line) for line in (reward_log / f"rewards-rank{rank}.jsonl").read_text().splitlines()]
        for rank in (0, 1)
    ]
    assert len(scored[0]) == len(scored[1]) == 2
    for step in range(2):
        ids = [set(scored[rank][step]["problem_id"]) for rank in (0, 1)]
        assert all(len(i) == 1 for i in ids) and ids[0] != ids[1]

    # The logged reward of each step is the mean over both machines' completions: rewards were gathered across nodes.
    history = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    logged = [h["rewards/completion_length_reward/mean"] for h in history if "loss" in h]
    for step in range(2):
        both = scored[0][step]["rewards"] + scored[1][step]["rewards"]
        assert logged[step] == pytest.approx(sum(both) / len(both))
    assert (out / "model.safetensors").is_file()


def test_slurm_launcher_starts_one_accelerate_launch_per_node(tmp_path):
    """recipes/launch_slurm.sh under a 2-node allocation (srun, scontrol and accelerate stubbed): machine ranks from
    SLURM_NODEID, the first node as the rendezvous address, process counts from the allocation."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in {
        "srun": 'shift 2\nfor node in 0 1; do SLURM_NODEID=$node "$@"; done',  # runs the per-node command on each
        "scontrol": "printf 'gpu-node-a\\ngpu-node-b\\n'",
        "accelerate": 'echo "accelerate $*"',
    }.items():
        (stubs / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (stubs / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "gpu-node-[a-b]", "GPUS_PER_NODE": "8"}
    result = subprocess.run(
        ["bash", str(REPO / "recipes" / "launch_slurm.sh"), "grpo", "--config", "recipe.yaml", "--seed", "1"],
        capture_output=True, text=True, env=env, timeout=60, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for rank, line in enumerate(lines):
        assert line == (
            "accelerate launch --config_file recipes/accelerate_configs/zero3.yaml --num_machines 2 --num_processes 16"
            f" --machine_rank {rank} --main_process_ip gpu-node-a --main_process_port 29500 --rdzv_backend static"
            " -m videorft_hf.scripts.grpo --config recipe.yaml --seed 1"
        )
    unknown = subprocess.run(["bash", str(REPO / "recipes" / "launch_slurm.sh"), "train"], capture_output=True,
                             text=True, env=env, timeout=60)
    assert unknown.returncode == 2 and "unknown command 'train'; use sft or grpo" in unknown.stderr
