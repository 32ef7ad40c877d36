"""generation_engine: GRPO's rollouts on the rollout engine (`videorft_hf.rollout.RolloutEngine`).

The config field resolves once (`RunSettings.generation_engine`); with "compiled" the trainer's generation seam runs
the engine. The reference is transformers' own `model.generate`, called here on the prompt ids and every row's vision
tensors (no prompt sharing) with the rollout's settings written out in the test; the engine is never compared with
itself. The tiny models get weights spread wider than their initialisation (`spread`), so greedy completions are not
decided by float rounding. Tests run the engine eagerly (on CPU it never compiles).
"""

import dataclasses

import pytest
import torch
from datasets import Dataset
from PIL import Image
from trl import GRPOConfig

from videorft_hf.configs import GenerationEngineError, VideoGRPOConfig
from videorft_hf.processing import collate_vision, mm_token_type_ids
from videorft_hf.rollout import RolloutEngine
from videorft_hf.run_record import build_run_record
from videorft_hf.settings import RunSettings, compiled_engine_problem, resolve_generation_engine
from videorft_hf.testing import build_tiny_vlm, save_tiny_vlm, write_test_video
from videorft_hf.trainer import VideoGRPOTrainer

SAMPLING = dict(video_sampling_preset="video-r1-train", video_min_pixels=16 * 784, video_max_pixels=16 * 784)
G = 2
STEPS = 12


def grpo_args(tmp_path, config_class=VideoGRPOConfig, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=G,
        max_completion_length=STEPS,
        max_steps=1,
        learning_rate=5e-2,
        report_to=[],
        use_cpu=True,
        bf16=False,
        logging_steps=1,
        save_strategy="no",
        seed=0,
        **(SAMPLING if config_class is VideoGRPOConfig else {}),
    )
    values.update(overrides)
    return config_class(**values)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    videos = []
    for i, (frames, fps) in enumerate([(16, 8), (24, 12)]):
        path = root / f"clip{i}.mp4"
        write_test_video(path, num_frames=frames, fps=fps, width=56, height=56)
        videos.append(str(path))
    image = root / "still.png"
    Image.new("RGB", (56, 84), (200, 30, 30)).save(image)
    return {"videos": videos, "image": str(image)}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {family: str(save_tiny_vlm(family, root / family)) for family in ("qwen2_5_vl", "qwen3_vl")}


def user(kind, text):
    content = ([{"type": kind}] if kind else []) + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


def prompts(kind, media):
    """Two prompts of one kind: "video", "image" (trl's own image path) or "mixed" (video and image)."""
    video = [{"prompt": user("video", "What moves?"), "video": media["videos"][0], "image": None},
             {"prompt": user("video", "How many shapes are there?"), "video": media["videos"][1], "image": None}]
    image = [{"prompt": user("image", "What colour?"), "video": None, "image": media["image"]},
             {"prompt": user("image", "Describe the picture."), "video": None, "image": media["image"]}]
    text = [{"prompt": user(None, "Say hi.")}]  # a text dataset: no media columns
    return {"video": video, "image": image, "mixed": [video[0], image[0]], "text": text + text}[kind]


def repeated(rows):
    """The generation batch trl's sampler builds: each prompt's G rows one after another."""
    return [dict(row) for row in rows for _ in range(G)]


def varied_reward(completion_ids, **kwargs):
    """Differs between the completions of a group (so the advantages, and the update, are not zero)."""
    return [float(sum(ids) % 7) for ids in completion_ids]


def spread(model, std=0.3, seed=0):
    """Matrices drawn with a wider spread than the tiny models' initialisation: well-separated logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator).to(parameter.dtype) * std)


def trainer_for(tmp_path, model_dir, media, kind="mixed", **overrides):
    args = grpo_args(tmp_path, **overrides)
    trainer = VideoGRPOTrainer(
        model_dir, reward_funcs=[varied_reward], args=args, train_dataset=Dataset.from_list(prompts(kind, media))
    )
    return trainer


def rollouts(trainer, rows, seed=0):
    """One generation batch through the trainer's seams, as trl's training step runs it."""
    torch.manual_seed(seed)
    trainer.model.train()
    return trainer._generate_and_score_completions(repeated(rows))


def completions(output):
    """Each row's completion ids up to and including its end of sequence."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(output["completion_ids"], output["completion_mask"], strict=True)]


def reference(trainer, output, **settings):
    """transformers' `model.generate` on the batch's prompt ids with every row's vision tensors (collated, no
    prompt sharing): trl's settings, the vision placeholders suppressed, written out here."""
    model = trainer.model
    ids, mask = output["prompt_ids"], output["prompt_mask"]
    if "vision_inputs" in output:  # the package's media path: both placeholders suppressed
        vision = collate_vision(output["vision_inputs"])
        placeholders = [model.config.image_token_id, model.config.video_token_id]
    else:  # trl's own path: its image tensors, and trl suppresses the image placeholder
        vision = {key: output[key] for key in ("pixel_values", "image_grid_thw") if key in output}
        placeholders = [model.config.image_token_id]
    if vision:
        vision["mm_token_type_ids"] = mm_token_type_ids(ids, model.config.image_token_id, model.config.video_token_id)
    with torch.no_grad():
        sequences = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=STEPS, suppress_tokens=placeholders,
            eos_token_id=trainer.eos_token_ids, pad_token_id=trainer.processing_class.tokenizer.pad_token_id,
            **settings, **vision,
        )
    out = []
    for row in sequences[:, ids.size(1):].tolist():
        ends = [i for i, token in enumerate(row) if token in trainer.eos_token_ids]
        out.append(row[: ends[0] + 1] if ends else row)
    return out


# ---------------------------------------------------------------------------------------------- (a) config
def test_config_validation_is_typed_and_says_what_to_do():
    def config(**fields):
        return VideoGRPOConfig(output_dir="out", report_to=[], use_cpu=True, **fields)

    assert config().generation_engine is None and config().generation_merge_lora is False
    with pytest.raises(GenerationEngineError, match=r"generation_engine must be one of \('compiled', 'transformers'\)"):
        config(generation_engine="fast")
    with pytest.raises(GenerationEngineError, match="vLLM generates the rollouts.*Unset generation_engine, or set use_vllm=False"):
        config(generation_engine="compiled", use_vllm=True)
    with pytest.raises(GenerationEngineError, match="generation_merge_lora=True is an option of generation_engine='compiled'"):
        config(generation_engine="transformers", generation_merge_lora=True)
    assert issubclass(GenerationEngineError, ValueError)  # what trl's configs raise


def test_resolution_device_sharding_vllm_and_model():
    qwen = build_tiny_vlm("qwen2_5_vl")[0].config
    # Unset: the engine on CUDA, generate elsewhere and wherever the engine cannot run.
    assert resolve_generation_engine(None, device_type="cpu", model_config=qwen) == "transformers"
    assert resolve_generation_engine(None, device_type="mps", model_config=qwen) == "transformers"
    assert resolve_generation_engine(None, device_type="cuda", model_config=qwen) == "compiled"
    assert resolve_generation_engine(None, device_type="cuda", sharded=True, model_config=qwen) == "transformers"
    assert resolve_generation_engine(None, use_vllm=True, device_type="cuda") == "vllm"
    # Explicit: as asked on any device; refused where it cannot run, never substituted.
    assert resolve_generation_engine("compiled", device_type="cpu", model_config=qwen) == "compiled"
    assert resolve_generation_engine("transformers", device_type="cuda", model_config=qwen) == "transformers"
    with pytest.raises(GenerationEngineError, match=r"sharded parameters \(FSDP or DeepSpeed ZeRO-3\).*Set generation_engine='transformers'"):
        resolve_generation_engine("compiled", device_type="cuda", sharded=True, model_config=qwen)
    flash = build_tiny_vlm("qwen2_5_vl")[0].config
    flash._attn_implementation = "flash_attention_2"
    assert resolve_generation_engine(None, device_type="cuda", model_config=flash) == "transformers"
    with pytest.raises(GenerationEngineError, match="uses 'flash_attention_2'.*attn_implementation='sdpa'"):
        resolve_generation_engine("compiled", device_type="cuda", model_config=flash)
    # The settings: resolved once, the config's fields kept as given.
    args = VideoGRPOConfig(output_dir="out", report_to=[], use_cpu=True)
    assert RunSettings.resolve(args, qwen).generation_engine == "transformers"  # use_cpu
    settings = RunSettings.resolve(args, qwen, device_type="cuda")
    assert settings.generation_engine == "compiled" and settings.generation.generation_engine is None
    with pytest.raises(GenerationEngineError, match="sharded"):
        RunSettings.resolve(VideoGRPOConfig(output_dir="out", report_to=[], use_cpu=True, generation_engine="compiled"),
                            qwen, sharded=True)
    assert RunSettings.resolve(GRPOConfig(output_dir="out", report_to=[], use_cpu=True)).generation_engine == "transformers"


def test_the_engine_refuses_what_the_resolution_says_it_cannot_run():
    """`compiled_engine_problem` states the engine's own requirements: where it names a problem, the engine raises."""
    model = build_tiny_vlm("qwen2_5_vl")[0]
    assert compiled_engine_problem(model.config) is None
    RolloutEngine(model)  # builds
    model.config._attn_implementation = "flash_attention_2"
    assert compiled_engine_problem(model.config)
    with pytest.raises(ValueError, match="sdpa or eager"):
        RolloutEngine(model)


def test_an_explicit_compiled_engine_with_a_model_it_cannot_run_fails_before_training(tmp_path, media, model_dirs):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(model_dirs["qwen2_5_vl"], attn_implementation="eager")
    model.config._attn_implementation = "flash_attention_2"  # what the engine refuses
    with pytest.raises(GenerationEngineError, match="cannot run with this model"):
        VideoGRPOTrainer(model, reward_funcs=[varied_reward], args=grpo_args(tmp_path, generation_engine="compiled"),
                         train_dataset=Dataset.from_list(prompts("video", media)))


# ---------------------------------------------------------------------------------------------- (b) greedy
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("kind", ["video", "image", "mixed"])
def test_greedy_rollouts_equal_generate(tmp_path, media, model_dirs, family, kind):
    """Greedy GRPO rollouts (G=2 per prompt) on the engine equal `model.generate`'s, as do those of the
    "transformers" engine; each group's prompt is prefilled once. Image batches take trl's own path, where an
    explicit "compiled" runs the engine on the vision tensors trl collates."""
    trainer = trainer_for(tmp_path, model_dirs[family], media, kind, generation_engine="compiled",
                          generation_kwargs={"do_sample": False})
    spread(trainer.model)
    assert trainer.settings.generation_engine == "compiled"
    rows = prompts(kind, media)
    output = rollouts(trainer, rows)
    engine = trainer.rollout_engine
    assert engine is not None and engine.last_stats.rows == len(rows) * G and engine.last_stats.groups == len(rows)
    expected = reference(trainer, output, do_sample=False)
    got = completions(output)
    assert got == expected
    assert len({tuple(c) for c in got}) > 1 and max(map(len, got)) > 3  # greedy is meaningful here
    trainer.settings = dataclasses.replace(trainer.settings, generation_engine="transformers",
                                           generation=dataclasses.replace(trainer.settings.generation,
                                                                          generation_engine="transformers"))
    assert completions(rollouts(trainer, rows)) == expected
    assert engine.last_stats.rows == len(rows) * G  # the engine did not run again


def test_the_vision_placeholders_stay_suppressed_on_the_engine(tmp_path, media, model_dirs):
    """The model is biased towards the image and video placeholders; the engine's rollouts contain none."""
    trainer = trainer_for(tmp_path, model_dirs["qwen2_5_vl"], media, "mixed", generation_engine="compiled")
    placeholders = [trainer.image_token_id, trainer.video_token_id]

    def prefer_placeholders(module, args, logits):
        logits = logits.clone()
        logits[..., placeholders] += 1e4
        return logits

    head = trainer.model.get_output_embeddings()
    hook = head.register_forward_hook(prefer_placeholders)
    try:
        ids = trainer.processing_class.tokenizer("Hi", return_tensors="pt").input_ids
        free = RolloutEngine(trainer.model).generate(ids, max_new_tokens=3, do_sample=False)[0, ids.size(1):]
        assert set(free.tolist()) <= set(placeholders)  # unsuppressed, the engine (and its copy of the hook) emits them
        output = rollouts(trainer, prompts("mixed", media))
    finally:
        hook.remove()
    assert trainer.rollout_engine is not None
    emitted = [ids for ids in completions(output) if set(ids) & set(placeholders)]
    assert not emitted and all(completions(output)), emitted


# ---------------------------------------------------------------------------------------------- (c) sampled
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_sampled_rollouts_equal_generate_with_the_same_seed(tmp_path, media, model_dirs, family):
    """trl's sampling settings (temperature, top-p, top-k) with one seed: the engine draws the tokens `generate`
    draws (one draw per row and step from the same distributions)."""
    trainer = trainer_for(tmp_path, model_dirs[family], media, "mixed", generation_engine="compiled",
                          temperature=0.9, top_p=0.95, top_k=20)
    spread(trainer.model, std=0.1)  # flatter logits: the draws are not all the greedy token
    rows = prompts("mixed", media)
    output = rollouts(trainer, rows, seed=3)
    assert trainer.rollout_engine is not None
    torch.manual_seed(3)
    expected = reference(trainer, output, do_sample=True, temperature=0.9, top_p=0.95, top_k=20)
    assert completions(output) == expected
    torch.manual_seed(3)
    greedy = reference(trainer, output, do_sample=False)
    assert expected != greedy  # the rollouts were sampled


# ---------------------------------------------------------------------------------------------- (d) refresh
def test_generation_after_an_optimizer_step_uses_the_updated_weights(tmp_path, media, model_dirs, monkeypatch):
    """A bf16 policy whose trainable weights are float32 (the precision rule) at lr 1e-5: the engine generates with
    bf16 copies, and each rollout after an optimizer step generates with the updated weights, rounded to bf16."""
    calls = []
    rollout = RolloutEngine.rollout

    def checked_rollout(engine, *args, **kwargs):
        copies = engine.weights.copies
        stale = sum(int((copy != source.to(copy.dtype)).sum()) for source, copy in copies)
        calls.append({"stale": stale, "copies": [copy.detach().clone() for _, copy in copies],
                      "addresses": [copy.data_ptr() for _, copy in copies]})
        return rollout(engine, *args, **kwargs)

    monkeypatch.setattr(RolloutEngine, "rollout", checked_rollout)
    trainer = trainer_for(tmp_path, model_dirs["qwen2_5_vl"], media, "video", generation_engine="compiled",
                          bf16=True, learning_rate=1e-5, max_steps=2, model_init_kwargs={"dtype": "bfloat16"})
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    assert trainable and {p.dtype for p in trainable} == {torch.float32}
    before = [p.detach().clone() for p in trainable]
    trainer.train()
    assert all(not torch.equal(b, p.detach()) for b, p in zip(before, trainable, strict=True))  # every tensor moved
    engine = trainer.rollout_engine
    assert engine.dtype == torch.bfloat16 and engine.weights.mode == "copies"
    assert len(engine.weights.copies) == len(trainable)
    assert len(calls) == 2 and [c["stale"] for c in calls] == [0, 0]  # each generated with the policy's weights
    # The step at lr 1e-5 reached the bf16 copies: bf16 rounds most updates of this size away, not all of them.
    moved = sum(int((a != b).sum()) for a, b in zip(calls[0]["copies"], calls[1]["copies"], strict=True))
    assert moved > 1000, moved
    assert calls[0]["addresses"] == calls[1]["addresses"]  # refreshed in place (compiled graphs read them there)


# ---------------------------------------------------------------------------------------------- (e) drop-in
def test_a_plain_grpo_config_keeps_trls_generation_for_text_and_image_batches(tmp_path, media, model_dirs, monkeypatch):
    """With a plain `GRPOConfig`, where the engine is the default (CUDA, simulated here by resolving the settings for
    it), text and image batches take trl's own path and `model.generate`; a video batch takes the engine."""
    used = []
    generate = RolloutEngine.generate
    monkeypatch.setattr(RolloutEngine, "generate", lambda self, *a, **k: used.append(1) or generate(self, *a, **k))
    args = grpo_args(tmp_path, config_class=GRPOConfig, generation_kwargs={"do_sample": False})
    trainer = VideoGRPOTrainer(model_dirs["qwen2_5_vl"], reward_funcs=[varied_reward], args=args,
                               train_dataset=Dataset.from_list(prompts("text", media)))
    spread(trainer.model)
    trainer.settings = RunSettings.resolve(args, trainer.model.config, trainer.processing_class, device_type="cuda")
    assert trainer.settings.generation_engine == "compiled" and trainer.settings.generation.generation_engine is None
    for kind in ("text", "image"):
        rollouts(trainer, prompts(kind, media))
        assert trainer.rollout_engine is None and not used, kind
    rollouts(trainer, prompts("video", media))
    assert trainer.rollout_engine is not None and used


# ---------------------------------------------------------------------------------------------- (f) adapters
@pytest.mark.parametrize("merge_lora", [False, True])
def test_lora_trains_one_step_on_the_engine(tmp_path, media, model_dirs, merge_lora):
    from peft import LoraConfig

    args = grpo_args(tmp_path, generation_engine="compiled", generation_merge_lora=merge_lora)
    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"], reward_funcs=[varied_reward], args=args,
        train_dataset=Dataset.from_list(prompts("mixed", media)),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    assert trainer.rollout_engine.weights.mode == ("merged" if merge_lora else "policy")
    moved = [n for n, p in trainer.model.named_parameters() if n in before and not torch.equal(before[n], p)]
    assert moved and all("lora_" in n for n in moved)
    record = build_run_record("grpo", trainer, None, args, None)
    assert record["generation"] == {"engine": "compiled", "generation_engine": "compiled",
                                    "generation_merge_lora": merge_lora}


@pytest.mark.parametrize("merge_lora", [False, True])
def test_qlora_trains_one_step_on_the_engine(tmp_path, media, model_dirs, merge_lora):
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForImageTextToText.from_pretrained(model_dirs["qwen2_5_vl"], quantization_config=quantization)
    args = grpo_args(tmp_path, generation_engine="compiled", generation_merge_lora=merge_lora, beta=0.04)
    trainer = VideoGRPOTrainer(
        model, reward_funcs=[varied_reward], args=args, train_dataset=Dataset.from_list(prompts("video", media)),
        processing_class=AutoProcessor.from_pretrained(model_dirs["qwen2_5_vl"]),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    engine = trainer.rollout_engine
    assert engine is not None and engine.weights.mode == ("merged" if merge_lora else "policy")
    moved = [n for n, p in trainer.model.named_parameters() if n in before and not torch.equal(before[n], p)]
    assert moved and all("lora_" in n for n in moved)


def test_the_run_record_states_the_default_generator(tmp_path, media, model_dirs):
    args = grpo_args(tmp_path, max_steps=1)
    trainer = trainer_for(tmp_path, model_dirs["qwen2_5_vl"], media, "video", max_steps=1)
    trainer.train()
    assert trainer.rollout_engine is None  # CPU: generate
    record = build_run_record("grpo", trainer, None, args, None)
    assert record["generation"] == {"engine": "transformers", "generation_engine": None, "generation_merge_lora": False}
