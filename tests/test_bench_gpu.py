"""`benchmarks/bench_gpu.py` at tiny sizes on CPU (`--tiny`): the GPU benchmark's pipeline, so that it cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import bench_gpu  # noqa: E402

# One run of each command: GRPO with the paper recipe (full fine-tuning) on the rollout engine and on `generate`, SFT
# with the QLoRA recipe (4-bit, LoRA), eval. The slow test runs every run (GRPO with QLoRA, both lengths, Qwen3-VL), each in its own process as on a GPU.
RUNS = ["grpo-paper-256", "grpo-paper-256-generate", "sft-qlora", "eval", "prefix-sharing-1024"]
STAGES = ("decode", "encode", "generation", "rewards", "logprob_nograd", "logprob_policy", "backward_optimizer")


def check_figures(figures: dict, names: list[str]) -> None:
    assert figures["tiny"] and figures["machine"] == "cpu" and not figures["skipped"]
    assert sorted(figures["runs"]) == sorted(names)
    for name, run in figures["runs"].items():
        assert "error" not in run, run.get("error")
        if run["command"] == "prefix":  # the log-prob passes, shared and per row: same values, less work shared
            assert run["shape"]["completion"] == run["completion_length"] and run["shape"]["rows"] == 8 * run["prompts_per_step"]
            assert run["max_abs_logp_difference"] < 1e-4 and run["generation"]["same_sequences"]
            assert run["lm_token_ratio"] > 1 and run["vision_patch_ratio"] == 8
            assert run["step_s"]["shared"] > 0 and run["peak_allocated_gib"] is None  # CPU: no GPU peak
            continue
        assert run["memory_run"] == {"allocated_gib": None, "reserved_gib": None} and run["max_rss_gib"] > 0
        if run["command"] != "sft":
            assert run["generated_tokens"] > 0 and run["tokens_per_s"] > 0, name
        if run["command"] == "eval":
            assert run["generation_s"] > 0 and run["seconds_per_sample"] == pytest.approx(run["generation_s"] / 8, abs=1e-3)
            continue
        assert len(run["per_step"]) == run["steps"]
        step = run["step"]
        assert step["step_s"] > 0 and step["step_s"] >= step["data"]
        trainable = run["trainable"]
        assert trainable["tensors"] == len(trainable["shares"]) > 0
        assert all(0.0 <= share <= 1.0 for share in trainable["shares"].values())
        assert run["save_model_skipped"] and run["load_s"] > 0
        assert [entry["step"] for entry in run["logs"]] == list(range(1, run["steps"] + 1))
        if run["command"] == "grpo":
            # Every stage ran and took time; the rest of the step (backward, optimiser) is what is left of it.
            assert all(step[stage] > 0 for stage in STAGES), step
            assert abs(sum(step[s] for s in STAGES) + step["data"] - step["step_s"]) < 0.01
            completions = run["prompts_per_step"] * 8 * run["completion_length"] * run["steps"]
            assert run["generated_tokens"] <= completions
            assert 0 < run["share"]["generation"] < 1
        if "qlora" in name:
            assert all(".lora_" in tensor for tensor in trainable["shares"])
            # lora_B starts at zero and receives the whole first step: the measurement sees every element move.
            lora_b = [share for tensor, share in trainable["shares"].items() if ".lora_B." in tensor]
            assert lora_b and min(lora_b) > 0.99
        else:
            assert trainable["vision"]["tensors"] > 0 and trainable["language"]["tensors"] > 0
    table = bench_gpu.table(figures)
    assert all(f"| {name} |" in table for name in names)


def test_tiny_pipeline_runs_every_kind_of_run(tmp_path):
    figures = bench_gpu.main(["--tiny", "--work_dir", str(tmp_path), "--runs", *RUNS, "--json", str(tmp_path / "f.json")])
    check_figures(figures, RUNS)
    assert json.loads((tmp_path / "f.json").read_text())["runs"].keys() == set(RUNS)
    grpo = figures["runs"]["grpo-paper-256"]
    assert grpo["completion_length"] == 4 and grpo["trainable"]["dtypes"]  # the tiny short length
    # the engine run and its `generate` twin, read against each other
    assert (grpo["engine"], figures["runs"]["grpo-paper-256-generate"]["engine"]) == ("compiled", "transformers")
    assert figures["engine_speedup"].keys() == {"grpo-paper-256"} and figures["engine_speedup"]["grpo-paper-256"] > 0
    assert "rollout engine over `generate`" in bench_gpu.table(figures)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # seven runs and three model builds, each importing the stack afresh
def test_tiny_pipeline_every_run_in_its_own_process(tmp_path):
    out = tmp_path / "figures.json"
    subprocess.run(
        [sys.executable, "benchmarks/bench_gpu.py", "--tiny", "--isolation", "process", "--work_dir", str(tmp_path),
         "--json", str(out)],
        cwd=REPO, check=True, capture_output=True, timeout=1800,
    )
    figures = json.loads(out.read_text())
    check_figures(figures, [run.name for run in bench_gpu.default_runs(tiny=True)])
    lengths = {run["completion_length"] for run in figures["runs"].values() if run["command"] == "grpo"}
    assert lengths == set(bench_gpu.TINY_LENGTHS)


def test_architectures_are_the_published_ones():
    """Built on the meta device: exactly the parameter counts of the published checkpoints."""
    import torch
    from transformers import AutoModelForImageTextToText, SiglipModel

    from videorft_hf.testing import build_tiny_processor

    for family in bench_gpu.FAMILIES:
        tokenizer = build_tiny_processor(family, tokenizer_corpus=bench_gpu.tokenizer_corpus()).tokenizer
        config = bench_gpu.full_config(family, tokenizer)
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(config)
        assert sum(p.numel() for p in model.parameters()) == bench_gpu.PUBLISHED_PARAMETERS[family], family
        assert config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    with torch.device("meta"):
        siglip = SiglipModel(bench_gpu.siglip_config())
    assert sum(p.numel() for p in siglip.parameters()) == bench_gpu.PUBLISHED_PARAMETERS["siglip"]


def test_without_a_gpu_it_refuses_and_names_tiny(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit):
        bench_gpu.main([])
    assert "--tiny" in capsys.readouterr().err


def test_the_cpu_runner_leaves_the_gpu_benchmark_out():
    from benchmarks.__main__ import discover

    assert "bench_gpu" not in discover() and "bench_frames" in discover()


def test_gpu_command_lines_parse_with_the_recipes_and_the_run_sizes(tmp_path):
    """The GPU runs' flags (not exercised by --tiny, which adds CPU flags) parse with the commands' own parsers."""
    from videorft_hf.scripts import eval as eval_script
    from videorft_hf.scripts import grpo, sft

    paths = {key: str(tmp_path / key) for key in ("root", "rl", "cot", "eval", "siglip", "qwen2_5_vl", "qwen3_vl")}
    parsers = {"grpo": grpo.make_parser, "sft": sft.make_parser, "eval": eval_script.make_parser}
    for run in bench_gpu.default_runs():
        if run.command == "prefix":
            argv = bench_gpu.command_argv(run, paths, tiny=False, workdir=tmp_path)
            assert argv[argv.index("--completion") + 1] == "1024" and "--model" in argv and "cuda" in argv
            continue
        for extra_reward in (True, False):
            argv = bench_gpu.command_argv(run, paths, tiny=False, workdir=tmp_path, extra_reward=extra_reward)
            parsed = parsers[run.command]().parse_args_and_config(argv + (["--use_cpu", "true"] * (run.command != "eval")))
            if run.command == "eval":
                (args,) = parsed
                assert args.max_samples == 8 and args.max_new_tokens == 64 and args.model_name_or_path == paths["qwen2_5_vl"]
                assert args.video_sampling_preset == "videorft-eval"
                continue
            script_args, training_args, model_args = parsed
            assert training_args.max_steps == run.steps and training_args.save_strategy == "no"
            assert model_args.model_name_or_path == paths[run.family] and model_args.dtype == "bfloat16"
            assert training_args.gradient_accumulation_steps == run.prompts_per_step
            if run.command == "grpo":
                assert training_args.max_completion_length == run.completion_length in bench_gpu.LENGTHS
                assert not training_args.use_vllm and training_args.num_generations == 8
                assert training_args.per_device_train_batch_size == 8
                assert script_args.reward_funcs[:3] == ["format_reward", "accuracy_reward", "semantic_consistency_reward"]
                assert ("benchmarks.bench_gpu.ungated_semantic_reward" in script_args.reward_funcs) == extra_reward
                assert model_args.load_in_4bit == ("qlora" in run.name)
                # Full fine-tuning on one GPU: 8-bit AdamW moments (fp32 ones and the fp32 weights exceed 141 GB).
                assert (training_args.optim == "adamw_bnb_8bit") == ("paper" in run.name)
            else:
                assert model_args.load_in_4bit and model_args.use_peft
    lengths = {run.completion_length for run in bench_gpu.default_runs() if run.command == "grpo"}
    assert lengths == set(bench_gpu.LENGTHS)
