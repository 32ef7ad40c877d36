"""What a user sees from the real `videorft` commands: one clean line per expected error, and no third-party noise.

Every test here runs the console command in a subprocess, as a user does; the commands of one test run concurrently.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from videorft_hf.testing import save_tiny_siglip, save_tiny_vlm, write_test_video

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny"


def _videorft() -> str:
    return str(Path(sys.executable).parent / "videorft")


def _run_all(commands: list[list[str]], cwd: Path, timeout: int = 600) -> list[subprocess.CompletedProcess]:
    """Runs `videorft <argv>` for each argv at the same time; returns their results in order."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("VIDEORFT_FRAME_STORE", None)
    running = [
        (argv, subprocess.Popen([_videorft(), *argv], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True))
        for argv in commands
    ]
    results = []
    for argv, process in running:
        stdout, stderr = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(argv, process.returncode, stdout, stderr))
    return results


def _record(i: int, path: str, problem_type: str = "multiple choice") -> dict:
    return {
        "problem_id": i, "problem": f"Which shape moves first in clip {i}?", "data_type": "video",
        "problem_type": problem_type, "options": ["A. circle", "B. square"],
        "process": f"<think>Clip {i} shows a circle first.</think>", "solution": "<answer>A</answer>",
        "path": path, "data_source": "test",
    }


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    """A tiny model and SigLIP, four clips, a good dataset, one with an invalid row, and a benchmark with a missing
    clip."""
    root = tmp_path_factory.mktemp("kit")
    for i in range(4):
        write_test_video(root / "clips" / f"c{i}.mp4", num_frames=16, fps=8, width=56, height=56)
    good = [_record(i, f"./clips/c{i}.mp4") for i in range(4)]
    (root / "good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good))
    bad = good[:1] + [_record(1, "./clips/c1.mp4", problem_type="multi choice")] + good[2:]
    (root / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad))
    benchmark = [good[0], _record(9, "./clips/missing.mp4")]
    (root / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in benchmark))
    (root / "broken.yaml").write_text("learning_rate: 1.0e-5\nmax_steps: [1\n")
    (root / "refused.yaml").write_text("num_generations: 3\nper_device_train_batch_size: 8\n")
    (root / "wrong_type.yaml").write_text("learning_rate: fast\n")
    save_tiny_vlm("qwen2_5_vl", root / "model")
    save_tiny_siglip(root / "siglip")
    return root


def _error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if ": error: " in line]


def test_every_expected_error_is_one_line_naming_what_to_fix(kit):
    """A flag, a YAML recipe, a recipe value, a data row and a media file, each wrong: one line naming the file, row
    or field, exit status 2 (flags and recipes) or 1, no traceback; `--debug` shows it."""
    eval_args = ["--model_name_or_path", "model", "--media_root", ".", "--output_dir", "ev", "--max_new_tokens", "4"]
    sft_args = ["--config", str(TINY / "sft.yaml"), "--model_name_or_path", "model", "--media_root", ".",
                "--output_dir", "sft-bad", "--max_steps", "1"]
    cases = {
        "flag": (["eval", "--benchmarks", "b=bench.jsonl", "--batch_size", "two"], 2,
                 ["videorft eval: error: argument --batch_size/--batch-size: invalid int value: 'two'"]),
        "yaml": (["grpo", "--config", "broken.yaml"], 2,
                 ["the recipe file broken.yaml is not valid YAML", "(line 2, column 12)"]),
        "recipe value": (["grpo", "--config", "refused.yaml", "--dataset_name", "good.jsonl", "--use_cpu", "true"], 2,
                         ["must be divisible by num_generations", "the recipe file refused.yaml sets num_generations: 3"]),
        "recipe type": (["sft", "--config", "wrong_type.yaml"], 2,
                        ["the recipe file wrong_type.yaml: learning_rate: 'fast' is not a valid float"]),
        "data": (["sft", *sft_args, "--dataset_name", "bad.jsonl"], 1,
                 ["videorft sft: error: RecordValidationError: ", "bad.jsonl line 2", "problem_type"]),
        "media": (["eval", *eval_args, "--benchmarks", "b=bench.jsonl", "--on_bad_sample", "raise"], 1,
                  ["videorft eval: error: VideoNotFoundError: ", "missing.mp4: file not found"]),
        "debug": (["sft", *sft_args, "--dataset_name", "bad.jsonl", "--debug"], 1, ["RecordValidationError"]),
    }
    results = dict(zip(cases, _run_all([argv for argv, _, _ in cases.values()], cwd=kit), strict=True))
    for name, (_, status, needles) in cases.items():
        result = results[name]
        shown = f"{name}: {result.returncode}\n{result.stderr[-3000:]}"
        assert result.returncode == status, shown
        for needle in needles:
            assert needle in result.stderr, (needle, shown)
        if name == "debug":
            assert "Traceback (most recent call last)" in result.stderr, shown
            continue
        assert "Traceback" not in result.stderr + result.stdout, shown
        assert len(_error_lines(result)) == 1, shown


# Third-party messages about nothing the user did (the issue that fixed them names each).
NOISE = (
    "Setting accelerator to CPU",  # DeepSpeed, on every machine without a GPU
    "gradient_checkpointing",  # transformers 5.25's renames, through trl's defaults and calls
    "is deprecated",
    "The given NumPy array is not writable",  # read-only cached frames handed to torch
    "bos_token_id must be",  # transformers' default SigLIP text config
    "eos_token_id must be",
    "generation flags are not valid",  # a sampling flag given to greedy decoding (`--temperature 0`)
)


def test_training_and_evaluation_print_no_third_party_noise(kit):
    """A tiny `videorft sft`, `videorft grpo` (with the semantic reward's SigLIP) and `videorft eval` print none of the
    messages above, and no Python warning at all; evaluation at another sampling than training says so, naming
    both."""
    common = ["--model_name_or_path", "model", "--dataset_name", "good.jsonl", "--media_root", ".", "--max_steps", "1"]
    sft, grpo = _run_all(
        [
            ["sft", "--config", str(TINY / "sft.yaml"), *common, "--output_dir", "sft", "--save_strategy", "no"],
            ["grpo", "--config", str(TINY / "grpo.yaml"), *common, "--output_dir", "grpo", "--save_strategy", "no",
             "--max_completion_length", "8", "--reward_funcs", "format_reward", "accuracy_reward",
             "semantic_consistency_reward", "--semantic_model_name_or_path", "siglip"],
        ],
        cwd=kit,
    )
    # the SFT model was trained on 4 frames; `videorft eval` samples 32 (at most the clip's 16) by default
    (evaluation,) = _run_all(
        [["eval", "--model_name_or_path", "sft", "--benchmarks", "b=good.jsonl", "--media_root", ".",
          "--output_dir", "ev-noise", "--max_new_tokens", "4", "--batch_size", "4", "--temperature", "0"]],
        cwd=kit,
    )
    for result in (sft, grpo, evaluation):
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-4000:]
        for message in NOISE:
            assert message not in output, (result.args[0], message, output[-4000:])
        assert not re.search(r"\b\w+Warning: ", output), (result.args[0], output[-4000:])
    warning = evaluation.stderr
    assert "The video sampling of this evaluation differs from the model's training" in warning
    assert "here 32 frames at 2 fps" in warning and "in training 4 frames at 2 fps, 3136 pixels per frame" in warning
    assert "pass --video_sampling_preset video-r1-train --video_max_frames 4 --video_min_pixels 3136" in warning
    recorded = json.loads((kit / "ev-noise" / "results.json").read_text())
    assert recorded["model_abspath"] == str((kit / "sft").resolve())
    assert recorded["training_sampling"]["matches"] is False
