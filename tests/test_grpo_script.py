"""`videorft grpo`: the recipe, the parser, and 2 CPU processes under accelerate (resume: test_resume.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from videorft_hf.testing import save_tiny_vlm, write_test_image, write_test_video

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "recipes" / "tiny" / "grpo.yaml"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A small RL set in the release schema (JSONL) with real videos and images under a media root."""
    root = tmp_path_factory.mktemp("release")
    records = []
    for i in range(4):
        write_test_video(root / "videos" / f"clip{i}.mp4", num_frames=16, fps=8, width=56, height=56)
        write_test_image(root / "images" / f"img{i}.png", width=56, height=56)
        records.append(
            {"problem_id": 2 * i, "problem": f"Which shape moves first in clip {i}?", "data_type": "video",
             "problem_type": "multiple choice", "options": ["A. circle", "B. square"], "solution": "<answer>A</answer>",
             "path": f"./videos/clip{i}.mp4", "data_source": "test"}
        )
        records.append(
            {"problem_id": 2 * i + 1, "problem": "How many squares?", "data_type": "image",
             "problem_type": "numerical", "options": [], "solution": "<answer>2</answer>",
             "path": f"./images/img{i}.png", "data_source": "test"}
        )
    data = root / "rl.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    model = save_tiny_vlm("qwen2_5_vl", root / "model")
    return {"root": root, "data": data, "model": model}


def common_args(release, output_dir, *extra):
    return [
        "--config", str(TINY_RECIPE),
        "--model_name_or_path", str(release["model"]),
        "--dataset_name", str(release["data"]),
        "--media_root", str(release["root"]),
        "--output_dir", str(output_dir),
        "--max_completion_length", "8",
        *extra,
    ]


def test_grpo_script_trains_and_saves(release, tmp_path):
    # Resuming (weights, optimizer, scheduler, step, an interrupted run against an uninterrupted one): test_resume.py.
    from videorft_hf.scripts.grpo import main

    out = tmp_path / "run"
    assert main(common_args(release, out, "--max_steps", "2", "--save_steps", "1")) == 0
    assert (out / "checkpoint-2").is_dir() and (out / "model.safetensors").is_file()
    assert (out / "preprocessor_config.json").is_file() or (out / "processor_config.json").is_file()
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and "rewards/accuracy_reward/mean" in state["log_history"][0]
    assert "shaping/length_bonus" in state["log_history"][0]  # the recipe's length bonus, logged as shaping


def test_recipes_parse():
    from videorft_hf.scripts.grpo import make_parser

    parser = make_parser()
    for recipe in sorted((REPO / "recipes").glob("*/grpo/*.yaml")):
        script_args, training_args, model_args = parser.parse_args_and_config(
            args=["--config", str(recipe), "--dataset_name", "x", "--use_cpu", "true", "--bf16", "false"]
        )
        assert training_args.beta == 0.04 and training_args.loss_type == "grpo"
        assert training_args.num_generations == 8 and training_args.scale_rewards == "group"
        assert training_args.sampling_config().max_frames == 16 and training_args.length_bonus
        assert script_args.reward_funcs == ["format_reward", "accuracy_reward", "semantic_consistency_reward"]
        if recipe.name == "config_videorft.yaml":  # the paper's 8-GPU run: ZeRO-3 with vLLM rollouts
            assert training_args.use_vllm and training_args.vllm_mode == "colocate"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_accelerate_two_cpu_processes_train_two_steps_on_mixed_rows(release, tmp_path):
    # `accelerate launch --cpu` starts one process only: a MULTI_GPU config plus the recipe's use_cpu gives MULTI_CPU.
    out = tmp_path / "ddp"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "recipes" / "accelerate_configs" / "ddp.yaml"), "--num_processes", "2",
        "--mixed_precision", "no", "--main_process_port", str(_free_port()),
        "-m", "videorft_hf.scripts.grpo",
        *common_args(release, out, "--max_steps", "2", "--per_device_train_batch_size", "4", "--save_strategy", "no"),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Process 0 of 2 (MULTI_CPU)" in output and "Process 1 of 2 (MULTI_CPU)" in output
    assert (out / "model.safetensors").is_file()


def test_grpo_script_skips_invalid_first_and_last_records(release, tmp_path, caplog):
    from videorft_hf.data import NoValidRecordsError
    from videorft_hf.scripts.grpo import main

    rows = [json.loads(line) for line in release["data"].read_text().splitlines()]
    broken = [{**rows[0], "problem_type": "mcq"}, *rows[1:4], {**rows[4], "path": "/etc/passwd"}]
    data = tmp_path / "bad_first_and_last.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in broken))
    args = common_args(release, tmp_path / "run", "--max_steps", "1", "--save_strategy", "no")
    args[args.index("--dataset_name") + 1] = str(data)
    with caplog.at_level("WARNING", logger="videorft_hf.data"):
        assert main([*args, "--on_invalid_record", "skip"]) == 0
    assert "Skipped 2 invalid of 5 records (on_invalid='skip'); 3 rows loaded." in caplog.text
    assert (tmp_path / "run" / "model.safetensors").is_file()

    data.write_text("".join(json.dumps({**r, "problem_type": "mcq"}) + "\n" for r in rows[:2]))
    with pytest.raises(NoValidRecordsError, match="all 2 records are invalid"):
        main([*args, "--on_invalid_record", "skip"])


def test_grpo_script_evaluates_the_test_split_when_asked(release, tmp_path):
    """`--eval_strategy steps` loads `dataset_test_split` (a release file serves any split) and evaluates it."""
    from videorft_hf.scripts.grpo import main

    out = tmp_path / "eval-run"
    extra = ["--max_steps", "1", "--save_steps", "1", "--eval_strategy", "steps", "--eval_steps", "1"]
    extra += ["--per_device_eval_batch_size", "8", "--max_train_samples", "4"]
    assert main(common_args(release, out, *extra)) == 0
    history = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())["log_history"]
    evaluated = [entry for entry in history if any(key.startswith("eval_") for key in entry)]
    assert evaluated and "eval_rewards/accuracy_reward/mean" in evaluated[0], history
