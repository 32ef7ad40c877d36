"""VideoGRPOTrainer and `videorft eval` on the real vLLM engine (vLLM's CPU build), in fp32.

Run with `make test-vllm`: it builds `.venv-vllm` (vllm-cpu 0.31.0, torch 2.13.0+cpu, the transformers vllm-cpu
takes) and runs `pytest -m vllm tests/test_vllm_engine.py`. The default suite deselects these tests
(`-m "not vllm"`); without vLLM they skip.

What they hold the package to:
- the log-probs vLLM reports for the sampled tokens equal the trainer's own (trl's
  `sampling/sampling_logp_difference/max`, logged with vLLM importance sampling on) within 1e-4 at every step, on
  video rows (a 30 s clip whose temporal positions reach far beyond its spatial ones, and a 1 s clip with half a
  second per temporal grid), image rows and batches that mix them with each other and with text, colocated and with
  a server;
- colocate weight sync reaches the engine: after training, the engine's weights equal the trainer's (and the
  log-probs still agree at the steps after the first, which generate from synced weights);
- server mode: a real server started with the README's `vllm serve` flags; the features it renders sit on the
  trainer's prompt ids (whole placeholder runs, in order) and give the same log-probs; a server started without
  `--trust-request-mm-kwargs` stops training with a `VLLMServerError` naming the flag;
- `videorft eval --backend vllm` answers every sample as `--backend transformers` does, greedily.

CPU-only workarounds, all in the test harness (`tests/vllm_cpu.py`, `tests/vllm_cpu_site/`, the Makefile), each for
this reason:
- torchvision: the package index's build for torch 2.13 is a CUDA build whose extension needs `libc10_cuda.so`; it
  imports once its two operator schemas (`torchvision::nms`, `qnms`) are declared (`vllm_cpu_site/sitecustomize.py`,
  on PYTHONPATH for every process, vLLM's own subprocesses and the server included);
- torchaudio and torchcodec: CUDA builds too, which nothing here uses: `make test-vllm` uninstalls them;
- `enforce_eager`: compiling the model's graphs takes minutes on two cores;
- `kv_cache_memory_bytes` (256 MiB): on CPU `gpu_memory_utilization` is a share of the machine's RAM, which a shared
  machine rarely has free;
- `TORCHDYNAMO_DISABLE=1`: vLLM's CPU sampler `torch.compile`s its sampling step, a C++ build of about a minute in
  every fresh process;
- linear weights kept unpacked (`vllm_cpu.keep_linear_weights`): vLLM-CPU prepacks each linear layer's weight for
  oneDNN/SGL kernels and leaves a Parameter without `weight_loader`, so trl's weight sync could not reach the
  weights the engine computes with;
- 32-wide attention heads (`text_head_dim=32` of `videorft_hf.testing`): vLLM's CPU attention takes head sizes 32,
  64, 80, ... only;
- server weight sync skipped (`vllm_cpu.no_server_weight_sync`): trl syncs a server over NCCL, which needs CUDA; the
  server tests train at learning rate 0, so the server's weights stay the trainer's;
- the server runs as `python -m vllm.entrypoints.openai.api_server`: the `vllm serve` script looks up the `vllm`
  distribution, which vllm-cpu installs as `vllm-cpu`;
- `dtype=float32` (engine and server): vLLM runs a float32 checkpoint in half precision unless told otherwise.
"""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from PIL import Image

from videorft_hf.configs import VideoGRPOConfig
from videorft_hf.testing import save_tiny_vlm, write_test_video

pytestmark = pytest.mark.vllm

TOLERANCE = 1e-4
LOGP_DIFF = "sampling/sampling_logp_difference/max"


@pytest.fixture(scope="module")
def vllm_cpu():
    pytest.importorskip("vllm")
    import vllm_cpu

    vllm_cpu.setup_process()
    return vllm_cpu


@pytest.fixture(scope="module")
def assets(tmp_path_factory, vllm_cpu):
    root = tmp_path_factory.mktemp("vllm")
    model = save_tiny_vlm("qwen2_5_vl", root / "qwen2_5_vl", text_head_dim=vllm_cpu.HEAD_DIM)
    # 60 frames over 30 s: 16 frames sampled, 3.75 s per temporal grid, temporal positions up to 52 against a
    # spatial extent of 2 (2 x 2 merged patches per frame).
    long_clip = write_test_video(root / "long.mp4", num_frames=60, fps=2, width=56, height=56)
    # 16 frames over 1 s: 4 frames sampled, 0.5 s per temporal grid (a fraction that an integer cast drops).
    fast_clip = write_test_video(root / "fast.mp4", num_frames=16, fps=16, width=56, height=56)
    image = root / "still.png"
    Image.new("RGB", (56, 84), (200, 30, 30)).save(image)
    return {"model": str(model), "long": str(long_clip), "fast": str(fast_clip), "image": str(image), "root": root}


def user(text: str, *kinds: str) -> list[dict]:
    return [{"role": "user", "content": [*({"type": kind} for kind in kinds), {"type": "text", "text": text}]}]


def rows(assets) -> list[dict]:
    """Four generation batches of two prompts (in order: `shuffle_dataset=False`): two videos; an image and a text
    row; a row with an image and a video, and a video row; two image rows."""
    return [
        {"prompt": user("What happens over the whole clip?", "video"), "video": assets["long"], "image": None},
        {"prompt": user("What moves?", "video"), "video": assets["fast"], "image": None},
        {"prompt": user("What colour is it?", "image"), "video": None, "image": assets["image"]},
        {"prompt": user("Say hi."), "video": None, "image": None},
        {"prompt": user("Does the still match the clip?", "image", "video"), "video": assets["long"], "image": assets["image"]},
        {"prompt": user("What moves?", "video"), "video": assets["fast"], "image": None},
        {"prompt": user("Describe the picture.", "image"), "video": None, "image": assets["image"]},
        {"prompt": user("What colour is it?", "image"), "video": None, "image": assets["image"]},
    ]


def length_reward(completions, **kwargs):
    return [len(c[0]["content"]) / 10 for c in completions]


def grpo_args(tmp_path, **overrides) -> VideoGRPOConfig:
    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=4,
        learning_rate=5e-2,
        report_to=[],
        use_cpu=True,
        bf16=False,
        logging_steps=1,
        save_strategy="no",
        seed=0,
        shuffle_dataset=False,
        use_vllm=True,
        vllm_importance_sampling_correction=True,
        video_sampling_preset="video-r1-train",
        video_fps=2.0,
        video_min_pixels=4 * 784,
        video_max_pixels=4 * 784,
    )
    values.update(overrides)
    return VideoGRPOConfig(**values)


def logp_differences(trainer) -> list[float]:
    return [entry[LOGP_DIFF] for entry in trainer.state.log_history if LOGP_DIFF in entry]


def test_colocate_log_probs_and_weight_sync(tmp_path, assets, vllm_cpu, monkeypatch):
    from videorft_hf.trainer import VideoGRPOTrainer

    vllm_cpu.keep_linear_weights(monkeypatch)
    engines = vllm_cpu.engine_for_trl(monkeypatch)
    trainer = VideoGRPOTrainer(
        assets["model"],
        reward_funcs=[length_reward],
        args=grpo_args(tmp_path, vllm_mode="colocate"),
        train_dataset=Dataset.from_list(rows(assets)),
    )
    initial = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    differences = logp_differences(trainer)
    print("colocate sampling_logp_difference/max per step (video, image + text, image and video, image):", differences)
    assert len(differences) == 4 and all(math.isfinite(d) for d in differences)
    assert max(differences) < TOLERANCE, differences

    # The weights trained last reach the engine through trl's sync.
    trainer.vllm_generation.sync_weights()
    engine = engines[0].llm_engine.model_executor.driver_worker.model_runner.model
    engine_weights = dict(engine.named_parameters())
    for trainer_name, engine_name in [
        ("model.language_model.layers.0.mlp.down_proj.weight", "language_model.model.layers.0.mlp.down_proj.weight"),
        ("model.visual.blocks.0.mlp.down_proj.weight", "visual.blocks.0.mlp.down_proj.weight"),
    ]:
        trained = trainer.model.get_parameter(trainer_name).detach()
        assert not torch.equal(trained, initial[trainer_name]), trainer_name
        torch.testing.assert_close(engine_weights[engine_name].detach(), trained, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------------- server
def readme_serve_command() -> tuple[dict[str, str], list[str]]:
    """The environment and the flags of the README's `vllm serve` command (after the model)."""
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    line = next(line for line in readme.splitlines() if " vllm serve " in f" {line} ")
    words = shlex.split(line)
    at = words.index("vllm")
    env = dict(word.split("=", 1) for word in words[:at])
    assert words[at + 1] == "serve"
    return env, words[at + 3 :]  # words[at + 2] is the model


@pytest.fixture(scope="module")
def server(assets, vllm_cpu, tmp_path_factory):
    """A real vLLM server on loopback, started with the README's `vllm serve` flags and environment (less
    `CUDA_VISIBLE_DEVICES`) plus the CPU harness's."""
    env, flags = readme_serve_command()
    env.pop("CUDA_VISIBLE_DEVICES", None)
    log = tmp_path_factory.mktemp("server") / "server.log"
    with vllm_cpu.Server(assets["model"], flags, log, env=env) as running:
        yield running


def server_args(tmp_path, url, **overrides) -> VideoGRPOConfig:
    # Learning rate 0: the server's weights stay the trainer's (its weight sync is NCCL-only, see tests/vllm_cpu.py).
    return grpo_args(tmp_path, vllm_mode="server", vllm_server_base_url=url, learning_rate=0.0, **overrides)


def test_server_mode_places_features_on_the_trainers_prompt_ids(tmp_path, assets, vllm_cpu, server, monkeypatch):
    from videorft_hf import vllm_media
    from videorft_hf.trainer import VideoGRPOTrainer

    vllm_cpu.no_server_weight_sync(monkeypatch)
    placed = []

    def spy(features, prompt_ids):
        result = vllm_media_place_features(features, prompt_ids)
        if result is not None:  # None: a text row
            placed.append((list(prompt_ids), result))
        return result

    vllm_media_place_features = vllm_media.place_features
    monkeypatch.setattr(vllm_media, "place_features", spy)
    trainer = VideoGRPOTrainer(
        assets["model"],
        reward_funcs=[length_reward],
        args=server_args(tmp_path, server.url),
        train_dataset=Dataset.from_list(rows(assets)),
    )
    trainer.train()
    differences = logp_differences(trainer)
    print("server sampling_logp_difference/max per step (video, image + text, image and video, image):", differences)
    assert len(differences) == 4 and max(differences) < TOLERANCE, differences

    # Every rendered feature sits on a whole run of its placeholder in the trainer's prompt, between the vision
    # start and end tokens, in the order of the row's media.
    tokenizer = trainer.processing_class.tokenizer
    pad = {"image": tokenizer.convert_tokens_to_ids("<|image_pad|>"), "video": tokenizer.convert_tokens_to_ids("<|video_pad|>")}
    start, end = (tokenizer.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>"))
    seen = {"image": 0, "video": 0}
    assert len(placed) == 7  # the unique prompts with media: two videos, an image, a row with both, a video, 2 images
    for prompt_ids, features in placed:
        for modality, ranges in features["mm_placeholders"].items():
            runs = [i for i in range(len(prompt_ids)) if prompt_ids[i] == pad[modality] and prompt_ids[i - 1] == start]
            assert [r["offset"] for r in ranges] == runs
            for r in ranges:
                span = prompt_ids[r["offset"] - 1 : r["offset"] + r["length"] + 1]
                assert span == [start] + [pad[modality]] * r["length"] + [end]
            seen[modality] += len(ranges)
    assert seen == {"image": 4, "video": 4}


def test_a_server_without_a_needed_flag_gets_an_error_that_names_it(tmp_path, assets, vllm_cpu, monkeypatch):
    """The README's server less `--trust-request-mm-kwargs`: vLLM 0.31 refuses the render request's
    `mm_processor_kwargs`, and training stops at the first video batch with `VLLMServerError` naming the flag."""
    from videorft_hf.trainer import VideoGRPOTrainer
    from videorft_hf.vllm_media import VLLMServerError

    env, flags = readme_serve_command()
    env.pop("CUDA_VISIBLE_DEVICES", None)
    assert "--trust-request-mm-kwargs" in flags
    flags.remove("--trust-request-mm-kwargs")
    vllm_cpu.no_server_weight_sync(monkeypatch)
    with vllm_cpu.Server(assets["model"], flags, tmp_path / "server.log", env=env) as running:
        trainer = VideoGRPOTrainer(
            assets["model"],
            reward_funcs=[length_reward],
            args=server_args(tmp_path, running.url, max_steps=1),
            train_dataset=Dataset.from_list(rows(assets)[:2]),
        )
        with pytest.raises(VLLMServerError, match=r"Restart it with --trust-request-mm-kwargs") as error:
            trainer.train()
    assert "row 0 of the generation batch" in str(error.value) or "row 1 of the generation batch" in str(error.value)


# --------------------------------------------------------------------------------------------------- evaluation
@pytest.fixture(scope="module")
def sharp_model(assets, vllm_cpu):
    """The tiny model with its weight matrices (not its norms) scaled by 8: at the initial scale a random model's
    greedy text hardly depends on the input, let alone on positions; sharpened, its attention and logits do (with
    transformers' positions instead of Qwen's, its greedy answer about the 30 s clip changes)."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(assets["model"], dtype=torch.float32)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim >= 2 and "norm" not in name:
                parameter.mul_(8)
    path = assets["root"] / "sharp"
    model.save_pretrained(path)
    from transformers import AutoProcessor

    AutoProcessor.from_pretrained(assets["model"]).save_pretrained(path)
    return str(path)


def test_eval_vllm_backend_predicts_what_the_transformers_backend_predicts(tmp_path, assets, sharp_model, vllm_cpu):
    """`videorft eval --backend vllm` (its own engine, in its own process, from text prompts that vLLM expands) and
    `--backend transformers` on the same benchmark, greedily, in fp32: the same answer to every sample (the 30 s
    clip, the 1 s clip, an image)."""
    import json
    import subprocess
    import sys

    from videorft_hf.scripts.eval import main
    from videorft_hf.testing import make_record

    options = ["A. red", "B. blue", "C. green", "D. white"]
    records = [
        make_record(1, "multiple choice", "A", "./long.mp4", options=options, problem="What colour is the ball?"),
        make_record(2, "numerical", "3", "./fast.mp4", problem="How many frames move?"),
        make_record(3, "free-form", "red", "./still.png", data_type="image", problem="Describe it."),
    ]
    benchmark = tmp_path / "tiny_bench.jsonl"
    benchmark.write_text("".join(json.dumps(r) + "\n" for r in records))
    common = ["--model_name_or_path", sharp_model, "--media_root", str(assets["root"]), "--benchmarks", str(benchmark)]
    common += ["--temperature", "0", "--max_new_tokens", "8", "--dtype", "float32", "--batch_size", "3"]
    common += ["--video_fps", "2", "--video_min_frames", "4", "--video_max_frames", "16", "--progress", "false"]
    common += ["--video_min_pixels", str(4 * 784), "--video_max_pixels", str(4 * 784), "--cache_dir", str(tmp_path / "c")]
    assert main([*common, "--backend", "transformers", "--output_dir", str(tmp_path / "transformers")]) == 0
    command = [sys.executable, vllm_cpu.__file__, "eval", *common, "--backend", "vllm", "--output_dir", str(tmp_path / "vllm")]
    run = subprocess.run(command, env=vllm_cpu.child_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    outputs = {}
    for backend in ("transformers", "vllm"):
        samples = json.loads((tmp_path / backend / "tiny_bench.json").read_text())["samples"]
        outputs[backend] = [(s["problem_id"], s["output"], s["error"]) for s in samples]
    print("eval outputs:", outputs)
    assert all(error is None and output for _, output, error in outputs["transformers"])
    assert len({output for _, output, _ in outputs["transformers"]}) == 3  # the answers depend on the input
    assert outputs["vllm"] == outputs["transformers"]
