"""VideoGRPOTrainer: video reaches generation and every log-prob pass; shaping. Drop-in: tests/test_dropin.py."""

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import GRPOConfig

from videorft_hf.configs import VideoGRPOConfig
from videorft_hf.processing import VisionTokenMismatchError, mm_token_type_ids
from videorft_hf.testing import save_tiny_vlm, write_test_video
from videorft_hf.trainer import GenerationMedia, VideoGRPOTrainer
from videorft_hf.video import VideoNotFoundError

# Small frames keep the tiny models fast: 4..16 frames at 16*28*28 pixels.
SAMPLING = dict(video_sampling_preset="video-r1-train", video_min_pixels=16 * 784, video_max_pixels=16 * 784)


def grpo_args(tmp_path, config_class=VideoGRPOConfig, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=6,
        max_steps=2,
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
    return {"videos": videos, "image": str(image), "root": root}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {family: str(save_tiny_vlm(family, root / family)) for family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")}


def user(kind: str | None, text: str) -> list[dict]:
    content = ([{"type": kind}] if kind else []) + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


def video_rows(media, n=4):
    return [
        {"prompt": user("video", f"What happens in clip {i}?"), "video": media["videos"][i % 2], "image": None}
        for i in range(n)
    ]


def mixed_rows(media):
    return [
        {"prompt": user("video", "What moves?"), "video": media["videos"][0], "image": None},
        {"prompt": user("image", "What colour?"), "video": None, "image": media["image"]},
        {"prompt": user(None, "Say hi."), "video": None, "image": None},
        {"prompt": user("video", "How many?"), "video": media["videos"][1], "image": None},
    ]


def length_reward(completions, **kwargs):
    return [len(c[0]["content"]) / 10 for c in completions]


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed(model, before, part):
    return [n for n, p in model.named_parameters() if part in n and not torch.equal(before[n], p.detach())]


def test_vision_tower_trains_on_video_prompts(tmp_path, media, model_dirs):
    """The test that fails on stock trl 1.16: there the vision tower never sees the video in the loss."""
    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"],
        reward_funcs=[length_reward],
        args=grpo_args(tmp_path, beta=0.04),
        train_dataset=Dataset.from_list(video_rows(media)),
    )
    before = snapshot(trainer.model)
    trainer.train()
    visual = [n for n in before if "visual" in n]
    assert changed(trainer.model, before, "visual") == visual
    assert changed(trainer.model, before, "language_model")
    # each unique video is decoded once per generation batch: 2 videos x 2 steps, 4 rows each
    assert trainer.media_counts["video_decodes"] == 4
    assert trainer.media_counts["video_reuses"] == 4
    logs = trainer.state.log_history[0]
    assert logs["media/video_decodes"] == 2 and logs["kl"] == 0.0


class _Spy:
    """Records the vision inputs of every model call (generation and each log-prob pass)."""

    KEYS = (
        "pixel_values_videos", "video_grid_thw", "second_per_grid_ts", "pixel_values", "input_ids", "mm_encoder_outputs",
        "use_cache",
    )

    def __init__(self, model):
        self.calls = []

        def hook(module, args, kwargs):
            self.calls.append({k: kwargs.get(k) for k in self.KEYS})

        model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("steps_per_generation, num_iterations", [(2, 1), (1, 2)])
def test_mixed_batches_micro_batches_and_second_per_grid_ts(tmp_path, media, model_dirs, steps_per_generation, num_iterations):
    args = grpo_args(
        tmp_path,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        steps_per_generation=steps_per_generation,
        num_iterations=num_iterations,
        beta=0.04,
        max_steps=1,
    )
    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"], reward_funcs=[length_reward], args=args, train_dataset=Dataset.from_list(mixed_rows(media))
    )
    spy = _Spy(trainer.model)
    ref_spy = _Spy(trainer.ref_model)
    before = snapshot(trainer.model)
    trainer.train()
    assert changed(trainer.model, before, "visual")
    # clip0: 16 frames at 8 fps -> 4 frames sampled (0.5 fps); clip1: 24 frames at 12 fps -> 4 frames (2 fps / 1 fps)
    expected = {}
    for path in media["videos"]:
        from videorft_hf.video import load_video_frames

        _, metadata = load_video_frames(path, trainer.settings.sampling)
        expected[len(metadata.frames_indices)] = 2 / metadata.sampled_fps
    # Generation encodes the media once up front: the prefill of each unique prompt (prompt sharing, the default), or
    # transformers' generate passing `mm_encoder_outputs` to its first step (sharing off)
    generation = [
        c for c in spy.calls
        if (c["mm_encoder_outputs"] is not None or c["use_cache"]) and c["video_grid_thw"] is not None
    ]
    assert generation and all(c["second_per_grid_ts"] is not None for c in generation)
    for t in generation[0]["second_per_grid_ts"].tolist():
        assert t in [pytest.approx(v) for v in expected.values()]
    seen = 0
    for call in spy.calls + ref_spy.calls:
        grid = call["video_grid_thw"]
        if grid is None:
            continue
        ts = call["second_per_grid_ts"]
        assert ts is not None and len(ts) == grid.shape[0]
        for t in ts.tolist():
            assert t in [pytest.approx(v) for v in expected.values()]
        # every video placeholder token has its features in the same call
        video_tokens = (call["input_ids"] == trainer.video_token_id).sum().item()
        assert video_tokens == int(grid.prod(dim=-1).sum().item()) // 4
        seen += 1
    # reference and policy log-prob passes carried the video
    assert seen >= 2
    assert len(ref_spy.calls) > 0 and any(c["video_grid_thw"] is not None for c in ref_spy.calls)


def test_log_probs_equal_a_direct_forward(tmp_path, media, model_dirs):
    """The log-probs of a media batch are those of the distribution its rollouts are sampled from: the model's, with
    the image and video placeholders (which generation never samples) at -100, as vLLM's `logit_bias` sets them."""
    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"], reward_funcs=[length_reward], args=grpo_args(tmp_path), train_dataset=Dataset.from_list(mixed_rows(media))
    )
    model, processor = trainer.model, trainer.processing_class
    model.eval()
    rows = mixed_rows(media)
    with trainer.generation_batch(rows) as batch, torch.no_grad():  # as inside a generation batch
        prompt_ids, _, _ = trainer._tokenize_prompts([r["prompt"] for r in rows])
        vision_rows = batch.vision
        completion = processor.tokenizer("<think>a</think><answer>B</answer>", add_special_tokens=False)["input_ids"]
        width = max(len(p) for p in prompt_ids)
        pad = processor.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p + completion for p in prompt_ids])
        attention = torch.tensor([[0] * (width - len(p)) + [1] * (len(p) + len(completion)) for p in prompt_ids])
        full, _, _ = trainer._get_per_token_logps_and_entropies(model, input_ids, attention, len(completion), batch_size=4)
        micro, _, _ = trainer._get_per_token_logps_and_entropies(model, input_ids, attention, len(completion), batch_size=1)
        for i, (ids, vision) in enumerate(zip(prompt_ids, vision_rows, strict=True)):
            seq = torch.tensor([ids + completion])
            kwargs = dict(vision or {})
            kwargs["mm_token_type_ids"] = mm_token_type_ids(seq, trainer.image_token_id, trainer.video_token_id)
            logits = model(input_ids=seq, **kwargs).logits[0, len(ids) - 1 : -1].float()
            target = torch.tensor(completion)[:, None]
            unbiased = torch.log_softmax(logits, dim=-1).gather(1, target)[:, 0]
            logits[:, [processor.tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>")]] -= 100
            direct = torch.log_softmax(logits, dim=-1).gather(1, target)[:, 0]
            torch.testing.assert_close(full[i], direct, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(micro[i], direct, atol=1e-4, rtol=1e-4)
            assert (full[i] - unbiased).abs().max() > 1e-3  # the tiny model gives the placeholders real probability
    with pytest.raises(RuntimeError, match="_get_per_token_logps_and_entropies ran outside a generation batch"):
        trainer._get_per_token_logps_and_entropies(model, input_ids, attention, len(completion))  # the batch ended


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_other_families_train_one_step(tmp_path, media, model_dirs, family):
    trainer = VideoGRPOTrainer(
        model_dirs[family], reward_funcs=[length_reward], args=grpo_args(tmp_path, max_steps=1), train_dataset=Dataset.from_list(mixed_rows(media))
    )
    before = snapshot(trainer.model)
    trainer.train()
    assert changed(trainer.model, before, "visual")
    if family == "qwen3_vl":
        assert trainer.settings.sampling.patch_factor == 32


def test_a_qwen3_vl_run_record_states_the_sampling_that_ran(tmp_path, media, model_dirs):
    """Regression: the run record stated the config's sampling (frame sides in multiples of 28) while the trainer
    decoded Qwen3-VL video in multiples of its vision tower's 32; the record states what ran."""
    from videorft_hf.run_record import build_run_record
    from videorft_hf.video import VideoSamplingConfig, load_video_frames

    args = grpo_args(tmp_path, max_steps=1)
    trainer = VideoGRPOTrainer(
        model_dirs["qwen3_vl"], reward_funcs=[length_reward], args=args, train_dataset=Dataset.from_list(video_rows(media))
    )
    trainer.train()
    processor = trainer.processing_class.video_processor
    side = processor.patch_size * processor.merge_size  # the vision tower's, read off its processor
    record = build_run_record("grpo", trainer, None, args, None)
    assert side == 32 and record["sampling"]["patch_factor"] == side
    recorded = VideoSamplingConfig(**{k: v for k, v in record["sampling"].items() if k != "preset"})
    frames, _ = load_video_frames(media["videos"][0], recorded)
    assert frames.shape[1] % side == 0 and frames.shape[2] % side == 0
    assert record["sampling"]["preset"] == "video-r1-train" and record["sampling"]["max_pixels"] == 16 * 784


def test_qlora_trains_adapters_only(tmp_path, media, model_dirs):
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForImageTextToText.from_pretrained(model_dirs["qwen2_5_vl"], quantization_config=quantization)
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = VideoGRPOTrainer(
        model,
        reward_funcs=[length_reward],
        args=grpo_args(tmp_path, max_steps=1, beta=0.04),
        train_dataset=Dataset.from_list(video_rows(media)),
        processing_class=AutoProcessor.from_pretrained(model_dirs["qwen2_5_vl"]),
        peft_config=peft_config,
    )
    before = snapshot(trainer.model)
    trainer.train()
    moved = changed(trainer.model, before, "")
    assert moved and all("lora_" in n for n in moved)


def test_frames_reach_rewards_and_log_completions(tmp_path, media, model_dirs):
    seen = []

    def frames_reward(completions, frames, video, **kwargs):
        seen.append((frames, video))
        return [1.0] * len(completions)

    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"],
        reward_funcs=[frames_reward],
        args=grpo_args(tmp_path, max_steps=1, log_completions=True, per_device_train_batch_size=8),
        train_dataset=Dataset.from_list(mixed_rows(media)),
    )
    trainer.train()
    frames, videos = seen[0]
    by_video = {}
    for f, v in zip(frames, videos, strict=True):
        if v is not None:
            assert f.ndim == 4 and f.dtype.name == "uint8"
            by_video.setdefault(v, set()).add(id(f))
    assert by_video and all(len(ids) == 1 for ids in by_video.values())  # one array per video, shared
    assert any(isinstance(f, Image.Image) for f in frames)
    assert any(f is None for f in frames)


def test_bad_media_raises_or_skips(tmp_path, media, model_dirs):
    rows = video_rows(media)
    rows[1]["video"] = str(tmp_path / "missing.mp4")
    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"], reward_funcs=[length_reward], args=grpo_args(tmp_path, max_steps=1), train_dataset=Dataset.from_list(rows)
    )
    with pytest.raises(VideoNotFoundError, match="missing.mp4.*on_bad_sample='skip'"):
        trainer.train()
    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"],
        reward_funcs=[length_reward],
        args=grpo_args(tmp_path, max_steps=1, on_bad_sample="skip", max_skipped_fraction=0.5),
        train_dataset=Dataset.from_list(rows),
    )
    trainer.train()
    assert trainer.media_counts["skipped_samples"] == 2  # both generations of the bad row
    assert trainer.state.log_history[0]["media/skipped_samples"] == 2
    rows_per_step = trainer.args.per_device_train_batch_size
    assert trainer.skip_tally.summary() == {"samples": rows_per_step, "skipped": 2, "by_reason": {"bad_media": 2}}


def test_vision_token_mismatch_is_a_typed_error(tmp_path, media, model_dirs):
    rows = video_rows(media)
    rows[0]["prompt"] = user(None, "No placeholder, but a video column.")
    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"], reward_funcs=[length_reward], args=grpo_args(tmp_path, max_steps=1), train_dataset=Dataset.from_list(rows)
    )
    with trainer.generation_batch(rows):
        with pytest.raises(VisionTokenMismatchError, match=r"Row 0 of the generation batch has 0 video placeholder\(s\)"):
            trainer._tokenize_prompts([r["prompt"] for r in rows])  # the typed error naming the row, not the processor's


def test_generation_never_emits_vision_placeholders(tmp_path, model_dirs, media):
    """The model is biased to emit the video and image placeholders; the rollouts still contain none."""
    seen: list[list[int]] = []

    def recording_reward(completions, completion_ids, **kwargs):
        seen.extend(list(ids) for ids in completion_ids)
        return [0.0] * len(completions)

    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"],
        reward_funcs=[recording_reward],
        args=grpo_args(tmp_path, max_steps=1),
        train_dataset=Dataset.from_list(video_rows(media)),
    )
    stock = list(trainer.generation_config.suppress_tokens)
    placeholders = [trainer.video_token_id, trainer.image_token_id]
    assert trainer.video_token_id not in stock  # batches without video generate exactly as with trl

    def prefer_placeholders(module, args, logits):
        logits = logits.clone()
        logits[..., placeholders] += 1e4
        return logits

    hook = trainer.model.get_output_embeddings().register_forward_hook(prefer_placeholders)
    try:
        processor = trainer.processing_class
        ids = processor.tokenizer("What happens?", return_tensors="pt").input_ids
        unsuppressed = trainer.model.generate(input_ids=ids, max_new_tokens=3, do_sample=False)[0, ids.shape[1]:]
        assert set(unsuppressed.tolist()) & set(placeholders)  # the bias works: without suppression they appear
        trainer.train()
    finally:
        hook.remove()
    assert len(seen) == 4 and all(seen)
    emitted = [ids for ids in seen if set(ids) & set(placeholders)]
    assert not emitted, emitted
    assert trainer.generation_config.suppress_tokens == stock == trainer.generation_kwargs["suppress_tokens"]


def test_length_bonus_shaping(tmp_path, media, model_dirs):
    def accuracy_reward(completions, **kwargs):
        return [1.0, 1.0, 0.0, 1.0]

    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"],
        reward_funcs=[length_reward, accuracy_reward],
        args=grpo_args(tmp_path, length_bonus=True, length_bonus_min_tokens=2, length_bonus_max_tokens=4),
        train_dataset=Dataset.from_list(video_rows(media)),
    )
    # shaping adds no reward function: trl's reward lists and weights stay as the user gave them
    assert trainer.reward_func_names == ["length_reward", "accuracy_reward"]
    assert trainer.reward_weights.tolist() == [1.0, 1.0] and len(trainer.reward_processing_classes) == 2
    rewards = torch.tensor([[0.1, 1.0], [0.1, 1.0], [0.1, 0.0], [0.1, 1.0]])
    completion_ids = [[1, 2, 3], [1] * 6, [1, 2], [1, 2]]
    batch = GenerationMedia(groups=[0, 0, 1, 1])  # G = 2
    trainer.model.train()
    shaped = trainer.shape_rewards(rewards.clone(), completion_ids, batch)
    # group 1: two correct, lengths 3 (in range) and 6 (out); group 2: only one correct -> no bonus
    assert (shaped - rewards)[:, 1].tolist() == [pytest.approx(0.2), 0.0, 0.0, 0.0]
    assert torch.equal(shaped[:, 0], rewards[:, 0])  # the bonus goes to the accuracy reward only
    trainer.log({})
    assert trainer.state.log_history[-1]["shaping/length_bonus"] == pytest.approx(0.05)  # logged under its own name
    nan_rows = rewards.clone()
    nan_rows[0, :2] = torch.nan
    assert torch.isnan(trainer.shape_rewards(nan_rows, completion_ids, batch)[0]).all()


def test_two_groups_with_one_prompt_are_shaped_apart(tmp_path, media, model_dirs):
    """Groups are the ids fixed where the batch is built, not prompts: two groups with the same prompt and video are
    shaped apart (a group with one correct completion earns no length bonus, whatever the other group's), and the
    rows of a group earn theirs wherever the batch puts them."""
    def accuracy_reward(completions, **kwargs):
        return [1.0] * len(completions)

    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"],
        reward_funcs=[accuracy_reward],
        args=grpo_args(tmp_path, length_bonus=True, length_bonus_min_tokens=1, length_bonus_max_tokens=4),
        train_dataset=Dataset.from_list([video_rows(media)[0]] * 4),
    )
    rewards = torch.tensor([[1.0], [0.0], [1.0], [1.0]])  # one prompt and clip in every row
    completion_ids = [[1, 2]] * 4
    shaped = trainer.shape_rewards(rewards.clone(), completion_ids, GenerationMedia(groups=[0, 0, 1, 1]))
    assert (shaped - rewards)[:, 0].tolist() == pytest.approx([0.0, 0.0, 0.2, 0.2])  # group 0 has one correct
    shaped = trainer.shape_rewards(rewards.clone(), completion_ids, GenerationMedia(groups=[0, 1, 0, 1]))
    assert (shaped - rewards)[:, 0].tolist() == pytest.approx([0.2, 0.0, 0.2, 0.0])  # rows 0 and 2 together


def test_shaping_needs_the_accuracy_reward(tmp_path, media, model_dirs):
    with pytest.raises(ValueError, match="accuracy_reward"):
        VideoGRPOTrainer(
            model_dirs["qwen2_5_vl"], reward_funcs=[length_reward], args=grpo_args(tmp_path, length_bonus=True),
            train_dataset=Dataset.from_list(video_rows(media)),
        )


def test_temporal_grpo(tmp_path, media, model_dirs):
    calls = []

    def accuracy_reward(completions, **kwargs):
        calls.append(len(completions))
        return [1.0] * len(completions)

    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"],
        reward_funcs=[accuracy_reward],
        args=grpo_args(tmp_path, temporal_grpo=True, num_generations=4, max_steps=1),
        train_dataset=Dataset.from_list(video_rows(media)),
    )
    assert trainer.reward_func_names == ["accuracy_reward"]
    trainer.train()
    # one group of 4 ordered rollouts, plus 4 // 2 = 2 shuffled rollouts scored by the accuracy reward
    assert sorted(calls) == [2, 4]
    logs = trainer.state.log_history[0]
    assert logs["temporal/shuffled_accuracy"] == 1.0
    assert logs["shaping/temporal_bonus"] == pytest.approx(0.3)  # p = 1 >= 0.8 * p~ = 0.8: all earn it
    assert logs["rewards/accuracy_reward/mean"] == pytest.approx(1.3)  # added to the accuracy reward

    # the rule itself: p = 0.5 against p~ = 1.0 earns nothing; p = 1.0 against p~ = 0.5 earns 0.3 per correct one
    correct = torch.tensor([True, False, True, True])
    shuffled = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 2.0], [0.0, 0.0]])
    rewards = correct.float()[:, None]
    shaped = trainer.shape_rewards(rewards.clone(), [[1, 2]] * 4, GenerationMedia(groups=[0, 0, 1, 1], shuffled=shuffled))
    assert (shaped - rewards)[:, 0].tolist() == [0.0, 0.0, pytest.approx(0.3), pytest.approx(0.3)]


def test_temporal_grpo_and_the_length_bonus_each_read_their_own_threshold(tmp_path, media, model_dirs):
    def accuracy_reward(completions, **kwargs):
        return [1.0] * len(completions)

    args = grpo_args(
        tmp_path, temporal_grpo=True, temporal_accuracy_threshold=0.5, length_bonus=True,
        length_bonus_accuracy_threshold=0.1, length_bonus_min_tokens=1, length_bonus_max_tokens=8,
    )  # fmt: skip
    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"], reward_funcs=[accuracy_reward], args=args,
        train_dataset=Dataset.from_list(video_rows(media)),
    )  # fmt: skip
    assert grpo_args(tmp_path).temporal_accuracy_threshold == 0.1  # the default: T-GRPO's threshold as before
    rewards = torch.tensor([[0.3], [0.3], [0.9], [0.9]])
    shuffled = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # p~ = 0 in both groups
    shaped = trainer.shape_rewards(rewards.clone(), [[1, 2]] * 4, GenerationMedia(groups=[0, 0, 1, 1], shuffled=shuffled))
    # 0.3 is correct for the length bonus (> 0.1), not for T-GRPO (> 0.5); 0.9 is correct for both
    assert (shaped - rewards)[:, 0].tolist() == pytest.approx([0.2, 0.2, 0.5, 0.5])


def test_temporal_grpo_shuffled_rollouts_see_the_ordinary_prompt(tmp_path, media, model_dirs):
    """The shuffled rollouts are rendered with the trainer's chat template, tools and template kwargs, as the ordinary
    ones: here trl's `chat_template` (which trl sets for tool training) carries a marker, and both prompts have it."""

    def accuracy_reward(completions, **kwargs):
        return [1.0] * len(completions)

    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"],
        reward_funcs=[accuracy_reward],
        args=grpo_args(tmp_path, temporal_grpo=True, num_generations=4, max_steps=1),
        train_dataset=Dataset.from_list(video_rows(media)),
    )
    marker = "CUSTOM-TEMPLATE-MARKER"
    trainer.chat_template = marker + trainer.processing_class.chat_template
    prompts = []
    generate = trainer._generate_single_turn

    def recording(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        prompts.append([list(ids) for ids in prompt_ids])
        return generate(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)

    trainer._generate_single_turn = recording
    trainer.train()
    shuffled, ordinary = prompts  # the shuffled rollouts generate first: 4 // 2 of them, then the group of 4
    assert (len(shuffled), len(ordinary)) == (2, 4)
    decode = trainer.processing_class.tokenizer.decode
    assert decode(ordinary[0]).startswith(marker) and decode(shuffled[0]).startswith(marker)
    assert shuffled[0] == ordinary[0]  # the same prompt and as many vision tokens; only the frame order differs


class _FakeLLM:
    """Stands in for a colocated `vllm.LLM`: records the requests trl's own VLLMGeneration builds and, as vLLM does
    with a token prompt and its media, runs the model's processor on them (expanding each placeholder); reports the
    prompt it expanded. Counts encoder-cache resets."""

    def __init__(self, processor, eos_token_id):
        from types import SimpleNamespace as NS

        self.requests, self.sampling, self.expanded, self.resets = [], [], [], 0
        self.processor, self.eos = processor, eos_token_id
        self.llm_engine = NS(reset_encoder_cache=self._reset)

    def _reset(self):
        self.resets += 1

    def _expand(self, prompt):
        data = prompt.get("multi_modal_data")
        if not data:
            return list(prompt["prompt_token_ids"])
        text = self.processor.tokenizer.decode(prompt["prompt_token_ids"])
        kwargs = {}
        if "video" in data:
            kwargs.update(
                videos=[frames for frames, _ in data["video"]], do_sample_frames=False,
                video_metadata=[{k: v for k, v in meta.items() if k != "do_sample_frames"} for _, meta in data["video"]],
            )
        if "image" in data:
            kwargs["images"] = data["image"] if isinstance(data["image"], list) else [data["image"]]
        return list(self.processor(text=[text], add_special_tokens=False, **kwargs)["input_ids"][0])

    def generate(self, prompts, sampling_params=None, use_tqdm=False):
        from types import SimpleNamespace as NS

        self.requests.extend(prompts)
        self.sampling.append(sampling_params)
        logprob = {self.eos: NS(logprob=-0.5, rank=1)}
        expanded = [self._expand(p) for p in prompts]
        self.expanded.extend(expanded)
        return [NS(prompt_token_ids=ids, outputs=[NS(token_ids=[self.eos], logprobs=[logprob])]) for ids in expanded]


def test_vllm_colocate_requests_carry_frames_and_metadata(tmp_path, media, model_dirs, monkeypatch):
    """Runs trl's real colocate VLLMGeneration.generate with a fake LLM: no vLLM install needed."""
    import trl.generation.vllm_generation as vllm_generation

    from videorft_hf.video import load_video_frames

    monkeypatch.setattr(vllm_generation, "SamplingParams", lambda **kwargs: kwargs, raising=False)
    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"], reward_funcs=[length_reward], args=grpo_args(tmp_path), train_dataset=Dataset.from_list(mixed_rows(media))
    )
    fake = _FakeLLM(trainer.processing_class, trainer.eos_token_ids[0])
    _attach_vllm(trainer, "colocate", llm=fake)
    trainer.model.train()
    rows = [r for r in mixed_rows(media) for _ in range(2)]
    output = trainer._generate_and_score_completions(rows)

    assert len(fake.requests) == len(rows) and trainer.vllm_generation.llm is fake
    frames, metadata = load_video_frames(media["videos"][0], trainer.settings.sampling)
    video_request = fake.requests[0]
    (sent_frames, sent_metadata), = video_request["multi_modal_data"]["video"]
    assert sent_frames.shape == frames.shape and sent_metadata["frames_indices"] == metadata.frames_indices
    assert sent_metadata["fps"] == metadata.fps and sent_metadata["total_num_frames"] == metadata.total_num_frames
    assert video_request["mm_processor_kwargs"] == {"do_sample_frames": False}
    # the engine gets the prompt with one placeholder per video, as the chat template wrote it, and expands it into
    # exactly the ids the log-prob passes see
    assert video_request["prompt_token_ids"].count(trainer.video_token_id) == 1
    for i in range(len(rows)):
        assert fake.expanded[i] == output["prompt_ids"][i][output["prompt_mask"][i].bool()].tolist()
    grid = output["vision_inputs"][0]["video_grid_thw"]
    assert fake.expanded[0].count(trainer.video_token_id) == int(grid.prod()) // 4
    assert fake.resets == 1  # vision features cached before this batch (older weights) are dropped
    assert isinstance(fake.requests[2]["multi_modal_data"]["image"], Image.Image)
    assert "multi_modal_data" not in fake.requests[4]  # the text row
    assert output["completion_ids"].shape[0] == len(rows)


def test_vllm_colocate_tensor_parallel_gathers_media(tmp_path, media, model_dirs, monkeypatch):
    """vllm_tensor_parallel_size=2: trl all-gathers prompts and `images` over the TP group and one LLM generates for
    both ranks. The media travel in `images`, so the other rank's rows (here a pickled copy, as gloo/NCCL object
    collectives pickle) reach vLLM with their frames."""
    import pickle

    import trl.generation.vllm_generation as vllm_generation

    monkeypatch.setattr(vllm_generation, "SamplingParams", lambda **kwargs: kwargs, raising=False)
    gathered = []

    def all_gather_object(output, obj, group=None):
        output[0], output[1] = obj, pickle.loads(pickle.dumps(obj))
        gathered.append(obj)

    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: 0)
    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"], reward_funcs=[length_reward], args=grpo_args(tmp_path), train_dataset=Dataset.from_list(mixed_rows(media))
    )
    fake = _FakeLLM(trainer.processing_class, trainer.eos_token_ids[0])
    _attach_vllm(trainer, "colocate", llm=fake, tensor_parallel_size=2, tp_group=None)
    trainer.model.train()
    rows = [r for r in mixed_rows(media) for _ in range(2)]
    output = trainer._generate_and_score_completions(rows)

    assert len(fake.requests) == 2 * len(rows)  # both ranks' rows
    local, remote = fake.requests[0], fake.requests[len(rows)]
    for request in (local, remote):
        (frames, metadata), = request["multi_modal_data"]["video"]
        assert frames.dtype == np.uint8 and metadata["frames_indices"]
        assert request["mm_processor_kwargs"] == {"do_sample_frames": False}
    assert np.array_equal(local["multi_modal_data"]["video"][0][0], remote["multi_modal_data"]["video"][0][0])
    assert isinstance(fake.requests[len(rows) + 2]["multi_modal_data"]["image"], Image.Image)
    assert output["completion_ids"].shape[0] == len(rows)  # this rank keeps its own slice


def _client(url, monkeypatch):
    """trl's real VLLMClient (its constructor checks the server's /health and /v1/models); vLLM itself is not needed
    on the trainer's side for these requests."""
    import trl.generation.vllm_client as vllm_client

    monkeypatch.setattr(vllm_client, "is_vllm_available", lambda *args, **kwargs: True)
    return vllm_client.VLLMClient(base_url=url, connection_timeout=10)


def _attach_vllm(trainer, mode, **fields):
    """trl's real VLLMGeneration in `mode`, without the engine (colocate) or weight-sync (server, NCCL) set-up its
    constructor does: `fields` gives the engine (`llm=`) or the client (`vllm_client=`)."""
    import trl.generation.vllm_generation as vllm_generation

    generation = object.__new__(vllm_generation.VLLMGeneration)
    generation.__dict__.update(
        accelerator=trainer.accelerator, temperature=1.0, top_p=1.0, top_k=0, min_p=None, repetition_penalty=1.0,
        max_completion_length=6, mode=mode, enable_sleep_mode=False, _llm_weights_sleeping=False,
        generation_kwargs={}, structured_outputs_regex=None, tensor_parallel_size=1, logprobs=0, model=trainer.model,
        processing_class=trainer.processing_class,
    )
    generation.__dict__.update(fields)
    trainer.use_vllm, trainer.vllm_mode, trainer.vllm_generation = True, mode, generation
    trainer.vllm_importance_sampling_correction = False
    trainer._last_loaded_step = trainer.state.global_step
    return generation


def _server_generation(trainer, client):
    return _attach_vllm(trainer, "server", vllm_client=client)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_vllm_server_mode_sends_frames_and_metadata(tmp_path, media, model_dirs, family, monkeypatch):
    """trl's real VLLMClient and server-mode VLLMGeneration against a loopback server speaking vLLM's render and
    generate endpoints: the frames arrive lossless with their metadata, and the features point at the trainer's
    own prompt ids (Qwen3-VL: a span with timestamps between the runs of video pads)."""
    from vllm_server import FakeVLLMServer, frames_digest

    from videorft_hf.video import load_video_frames

    trainer = VideoGRPOTrainer(
        model_dirs[family], reward_funcs=[length_reward], args=grpo_args(tmp_path), train_dataset=Dataset.from_list(mixed_rows(media))
    )
    eos = trainer.eos_token_ids[0]
    with FakeVLLMServer(trainer.processing_class, eos_token_id=eos, merge_video_runs=family == "qwen3_vl") as server:
        client = _client(server.url, monkeypatch)
        generation = _server_generation(trainer, client)
        trainer.model.train()
        rows = [r for r in mixed_rows(media) for _ in range(2)]
        output = trainer._generate_and_score_completions(rows)

    assert generation.vllm_client is client and "_place_features" not in generation.__dict__
    assert len(server.renders) == 3  # one per unique prompt with media (video, image, video); none for text
    frames, metadata = load_video_frames(media["videos"][0], trainer.settings.sampling)
    # renders run concurrently: find the first video's by its pixels (lossless: the exact frames the trainer saw)
    render, = [r for r in server.renders if r["videos"] and frames_digest(r["videos"][0]) == frames_digest(frames)]
    assert render["metadata"]["frames_indices"] == list(metadata.frames_indices)
    assert render["metadata"]["fps"] == metadata.fps and render["metadata"]["total_num_frames"] == metadata.total_num_frames
    assert render["metadata"]["do_sample_frames"] is False and render["metadata"]["num_frames"] == -1
    assert render["body"]["mm_processor_kwargs"] == {"do_sample_frames": False}
    assert len(server.generations) == 4 and all(g["n"] == 2 for g in server.generations)
    # requests run concurrently: sort them by what they carry
    placed = sorted(repr(g["placed"]) for g in server.generations)
    assert placed == sorted([repr({}), repr({"image": [True]}), repr({"video": [True]}), repr({"video": [True]})])
    assert sum(g["features"] is None for g in server.generations) == 1  # the text row
    # the server generated from the trainer's prompt ids: the ones the log-prob passes see
    sent = sorted(g["token_ids"] for g in server.generations)
    trained = sorted(output["prompt_ids"][i][output["prompt_mask"][i].bool()].tolist() for i in range(0, len(rows), 2))
    assert sent == trained
    assert server.encoder_cache_resets == 1  # the server drops vision features cached before this batch
    assert output["completion_ids"].shape[0] == len(rows)


def test_vllm_server_mode_raises_when_the_server_expands_video_differently(tmp_path, media, model_dirs, monkeypatch):
    from vllm_server import FakeVLLMServer

    from videorft_hf.vllm_media import VLLMPromptMismatchError

    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"], reward_funcs=[length_reward], args=grpo_args(tmp_path), train_dataset=Dataset.from_list(video_rows(media))
    )
    # a server whose processor keeps fewer pixels than the trainer's: fewer video tokens per frame
    limits = {"size": {"shortest_edge": 4 * 784, "longest_edge": 4 * 784}}
    with FakeVLLMServer(trainer.processing_class, eos_token_id=trainer.eos_token_ids[0], video_kwargs=limits) as server:
        _server_generation(trainer, _client(server.url, monkeypatch))
        with pytest.raises(VLLMPromptMismatchError, match="row 0 of the generation batch"):
            # trl's layout: each prompt's num_generations=2 rows one after another
            trainer._generate_and_score_completions([r for r in video_rows(media, 2) for _ in range(2)])
    assert server.generations == []  # nothing generated from misplaced features


def test_vllm_server_mode_two_processes(tmp_path, media, model_dirs):
    """`accelerate launch --num_processes 2` on CPU: trl gathers both ranks' media (video on one, image and text on
    the other) to the main process, which renders and generates on the server; each rank gets its own slice."""
    import json
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    here = Path(__file__).parent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(here.parent / "recipes" / "accelerate_configs" / "ddp.yaml"), "--num_processes", "2",
        "--mixed_precision", "no", "--main_process_port", str(port), str(here / "vllm_server_ranks.py"),
        model_dirs["qwen2_5_vl"], media["videos"][0], media["videos"][1], media["image"], str(tmp_path),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["completions"] == rank1["completions"] == 4
    # each row's group, fixed where the batch was built: global ids, as trl's sampler laid the rows out over ranks
    assert (rank0["group_ids"], rank1["group_ids"]) == ([0, 0, 1, 1], [2, 2, 3, 3])
    assert rank0["renders"] == 3  # two videos from rank 0, one image from rank 1
    placed = sorted(repr(g["placed"]) for g in rank0["server"])
    assert placed == sorted([repr({}), repr({"image": [True]}), repr({"video": [True]}), repr({"video": [True]})])
    sent = sorted(g["token_ids"] for g in rank0["server"])
    assert sent == sorted(rank0["prompt_ids"][::2] + rank1["prompt_ids"][::2])


def test_vllm_suppresses_vision_placeholders_with_logit_bias(tmp_path, media, model_dirs):
    from types import SimpleNamespace

    from videorft_hf import vllm_media

    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"], reward_funcs=[length_reward], args=grpo_args(tmp_path), train_dataset=Dataset.from_list(video_rows(media))
    )
    # the bias is set while a video batch generates; batches without video keep trl's settings
    engine = object()
    generation = SimpleNamespace(mode="colocate", llm=engine, generation_kwargs={})
    trainer.use_vllm, trainer.vllm_generation = True, generation
    with trainer.generation_batch(video_rows(media)) as batch:
        rows = batch.rows
    with vllm_media.patched(generation, rows, trainer.vision_placeholder_ids) as images:
        bias = dict(trainer.vllm_generation.generation_kwargs["logit_bias"])
        assert isinstance(generation.llm, vllm_media.MultimodalLLM) and generation.llm.llm is engine
        assert [payload.name for payload, in images] == [f"row {i} of the generation batch" for i in range(4)]
    assert bias == {trainer.image_token_id: -100.0, trainer.video_token_id: -100.0}
    assert trainer.vllm_generation.generation_kwargs == {} and generation.llm is engine
    # the transformers-only suppression leaves vLLM's settings alone
    with trainer._vision_placeholders_suppressed():
        assert trainer.vllm_generation.generation_kwargs == {}


def test_a_plain_grpo_config_user_is_told_the_config_that_can_skip(tmp_path, media, model_dirs):
    rows = video_rows(media)
    rows[1]["video"] = str(tmp_path / "missing.mp4")
    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"],
        reward_funcs=[length_reward],
        args=grpo_args(tmp_path, GRPOConfig, max_steps=1),
        train_dataset=Dataset.from_list(rows),
    )
    with pytest.raises(VideoNotFoundError, match=r"missing.mp4.*VideoGRPOConfig\(\.\.\., on_bad_sample='skip'\)"):
        trainer.train()


def test_reward_models_load_before_the_first_step(tmp_path, media, model_dirs):
    from videorft_hf.rewards import RewardModelError, get_semantic_consistency_reward
    from videorft_hf.testing import save_tiny_siglip

    siglip = get_semantic_consistency_reward(str(save_tiny_siglip(tmp_path / "siglip")), resolve=False)
    args = grpo_args(tmp_path, max_steps=1)
    dataset = Dataset.from_list(video_rows(media))
    VideoGRPOTrainer(model_dirs["qwen2_5_vl"], reward_funcs=[siglip], args=args, train_dataset=dataset)
    assert siglip.encoder.loaded  # loaded by the trainer, not at the first correct answer
    typo = get_semantic_consistency_reward("tiny-siglp", resolve=False)  # as REWARD_FUNCS builds its entry
    with pytest.raises(RewardModelError, match="'tiny-siglp' cannot be loaded"):
        VideoGRPOTrainer(model_dirs["qwen2_5_vl"], reward_funcs=[typo], args=args, train_dataset=dataset)


def test_the_trainer_writes_the_videorft_card_not_trls_generic_one(tmp_path, media, model_dirs):
    from huggingface_hub import ModelCard

    args = grpo_args(tmp_path, max_steps=1, length_bonus=True, length_bonus_min_tokens=2, length_bonus_max_tokens=6,
                     accuracy_reward_name="accuracy_like")
    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"], reward_funcs=[accuracy_like], args=args, train_dataset=Dataset.from_list(video_rows(media))
    )
    trainer.create_model_card(model_name="tiny-grpo")  # what trl calls at each checkpoint and in push_to_hub
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.tags[:3] == ["trl", "grpo", "videorft"]
    for expected in (
        f"A fine-tuned version of `{model_dirs['qwen2_5_vl']}`", "`accuracy_like` (summed with equal weights)",
        "length bonus +0.2 for correct completions of 2-6 tokens", "learning_rate 0.05", "num_generations 2",
    ):
        assert expected in card.text, expected
    assert "None" not in card.text.split("## Training")[0]  # trl's card said "base model None"


def accuracy_like(completions, **kwargs):
    return [1.0] * len(completions)


class _Clock:
    def reset(self, **kwargs):
        return None

    def read_clock(self) -> str:
        """Reads the clock."""
        return "12:00"


class _Ruler:
    def reset(self, **kwargs):
        return None

    def measure_length(self) -> str:
        """Measures the length."""
        return "3 cm"


def test_each_prompt_is_rendered_with_its_environments_tools(tmp_path, media, monkeypatch):
    """Regression (drift from trl 1.16): with `environment_factory` a dict, trl renders each prompt with the tools of
    its row's environment; the media path rendered every prompt with the union of all environments' tools."""
    from transformers import AutoProcessor
    from trl.chat_template_utils import qwen3_vl_chat_template  # a template trl parses tool calls of

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    path = save_tiny_vlm("qwen3_vl", tmp_path / "model")
    processor = AutoProcessor.from_pretrained(path)
    processor.chat_template = qwen3_vl_chat_template
    clip = media["videos"][0]
    rows = [{"prompt": user("video", "What time is it?"), "video": clip, "image": None, "environment": "clock"}] * 2
    rows += [{"prompt": user("video", "How long is it?"), "video": clip, "image": None, "environment": "ruler"}] * 2
    trainer = VideoGRPOTrainer(
        str(path), reward_funcs=[length_reward], args=grpo_args(tmp_path, max_steps=1),
        train_dataset=Dataset.from_list(rows[::2]), processing_class=processor,
        environment_factory={"clock": _Clock, "ruler": _Ruler},
    )
    prompts = []

    def record(module, args, kwargs):  # the model's calls with whole prompts: the prefill of each group's prompt
        if kwargs.get("input_ids") is not None and kwargs["input_ids"].shape[1] > 1 and not prompts:
            prompts.extend(processor.tokenizer.batch_decode(kwargs["input_ids"]))

    trainer.model.register_forward_pre_hook(record, with_kwargs=True)
    trainer.model.train()
    trainer._generate_and_score_completions(rows)  # trl's layout: each prompt's two rows one after another
    clock, ruler = prompts
    assert "What time" in clock and "read_clock" in clock and "measure_length" not in clock
    assert "How long" in ruler and "measure_length" in ruler and "read_clock" not in ruler


def test_temporal_grpo_scores_shuffled_rollouts_with_an_async_accuracy_reward(tmp_path, media, model_dirs):
    """Regression (drift from trl 1.16): T-GRPO's shuffled rollouts are scored through trl's own reward call, so an
    asynchronous accuracy reward works there as it does for the ordinary rollouts (a hand-made call got a coroutine)."""
    calls = []

    async def accuracy_reward(completions, **kwargs):
        calls.append(len(completions))
        return [1.0] * len(completions)

    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"],
        reward_funcs=[accuracy_reward],
        args=grpo_args(tmp_path, temporal_grpo=True, num_generations=4, max_steps=1),
        train_dataset=Dataset.from_list(video_rows(media)),
    )
    trainer.train()
    assert sorted(calls) == [2, 4]  # the shuffled rollouts (4 // 2) and the group of 4
    logs = trainer.state.log_history[0]
    assert logs["temporal/shuffled_accuracy"] == 1.0 and logs["shaping/temporal_bonus"] == pytest.approx(0.3)
    assert logs["rewards/accuracy_reward/mean"] == pytest.approx(1.3)


def test_trls_profiling_times_the_packages_own_seams(tmp_path, media, model_dirs, monkeypatch):
    """trl's profiling (`profiling_decorator` / `profiling_context`) names where a media step's time goes: decoding,
    the shared prefill, the prompt-shared log-prob passes and T-GRPO's shuffled rollouts."""
    from trl.extras import profiling

    timed = []
    exit_ = profiling.ProfilingContext.__exit__

    def record(self, *args):
        timed.append(self.name)
        return exit_(self, *args)

    monkeypatch.setattr(profiling.ProfilingContext, "__exit__", record)

    def accuracy_reward(completions, **kwargs):
        return [1.0] * len(completions)

    trainer = VideoGRPOTrainer(
        model_dirs["qwen2_5_vl"],
        reward_funcs=[accuracy_reward],
        args=grpo_args(tmp_path, temporal_grpo=True, max_steps=1, beta=0.04),
        train_dataset=Dataset.from_list(video_rows(media)),
    )
    trainer.train()
    for seam in ("_load_media", "generate_with_shared_prefill", "shared_prompt_logps", "_rollout_shuffled"):
        assert f"VideoGRPOTrainer.{seam}" in timed, (seam, sorted(set(timed)))
