"""prompt_sharing: log-probs with each prompt and its media computed once equal trl's per-row computation."""

import contextlib
from types import SimpleNamespace

import pytest
import torch
from trl import GRPOTrainer
from trl.trainer.utils import add_fused_lm_head

from videorft_hf.processing import (
    collate_vision,
    encode_prompt,
    load_row_media,
    mm_token_type_ids,
    model_sampling_config,
    render_prompt,
)
from videorft_hf.prompt_sharing import (
    generate_with_shared_prefill,
    generation_groups,
    keep_groups_together,
    plan_chunks,
    shared_prompt_logps,
)
from videorft_hf.testing import build_tiny_vlm, write_test_image, write_test_video
from videorft_hf.video import VideoSamplingConfig

SAMPLING = VideoSamplingConfig(min_frames=4, max_frames=4, min_pixels=16 * 784, max_pixels=16 * 784)
G = 3
TEMPERATURE = 0.7


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    return {
        # Same size and question: identical prompt ids, different pixels (two groups, not one).
        "clip0": str(write_test_video(root / "clip0.mp4", num_frames=16, fps=8, width=56, height=56)),
        "clip1": str(write_test_video(root / "clip1.mp4", num_frames=24, fps=12, width=56, height=56)),
        "image": str(write_test_image(root / "still.png", width=56, height=84, index=3)),
    }


def row(kind, text, path=None):
    content = ([{"type": kind}] if kind else []) + [{"type": "text", "text": text}]
    out = {"prompt": [{"role": "user", "content": content}]}
    if kind:
        out[kind] = path
    return out


def rollout(model, processor, rows, generations=G, seed=0, shuffle=True):
    """trl's batch layout for `rows` x `generations` random completions: left-padded prompts, right-padded
    completions; per-row vision tensors (rows of one prompt share one dict, as the trainer hands them out) and each
    row's group (fixed before the shuffle, as the trainer fixes it)."""
    config = model_sampling_config(SAMPLING, model.config, processor)
    rng = torch.Generator().manual_seed(seed)
    prompts, visions, completions = [], [], []
    for r in rows:
        media = load_row_media(r, config)
        ids, vision = encode_prompt(processor, render_prompt(processor, r["prompt"]), media.videos, media.images)
        for _ in range(generations):
            prompts.append(ids)
            visions.append(vision or None)
            length = int(torch.randint(1, 8, (1,), generator=rng))
            completions.append(torch.randint(0, 250, (length,), generator=rng).tolist())
    order = torch.randperm(len(prompts), generator=rng).tolist() if shuffle else list(range(len(prompts)))
    pad = processor.tokenizer.pad_token_id
    width, keep = max(map(len, prompts)), max(map(len, completions))
    ids, masks = [], []
    for i in order:
        p, c = prompts[i], completions[i]
        ids.append([pad] * (width - len(p)) + p + c + [pad] * (keep - len(c)))
        masks.append([0] * (width - len(p)) + [1] * (len(p) + len(c)) + [0] * (keep - len(c)))
    groups = [i // generations for i in order]
    return torch.tensor(ids), torch.tensor(masks), keep, [visions[i] for i in order], groups


class _WithVision:
    def __init__(self, model, extra):
        self.model, self.extra = model, extra

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs, **self.extra)


def trl_logps(model, input_ids, mask, keep, visions, batch_size=None):
    """trl 1.16's own `_get_per_token_logps_and_entropies` with every row's vision tensors (the unshared path)."""
    extra = collate_vision(visions)
    config = model.config
    extra["mm_token_type_ids"] = mm_token_type_ids(input_ids, config.image_token_id, config.video_token_id)
    trainer = SimpleNamespace(accelerator=SimpleNamespace(autocast=contextlib.nullcontext))
    method = GRPOTrainer._get_per_token_logps_and_entropies.__wrapped__  # without trl's profiling wrapper
    if batch_size is None:
        logps, entropies, _ = method(trainer, _WithVision(model, extra), input_ids, mask, keep, compute_entropy=True)
        return logps, entropies
    parts = [
        trl_logps(model, input_ids[s : s + batch_size], mask[s : s + batch_size], keep, visions[s : s + batch_size])
        for s in range(0, input_ids.size(0), batch_size)
    ]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def gradients(model, logps, entropies, mask, keep):
    """Parameter gradients of a GRPO-like loss over the log-probs and entropies."""
    model.zero_grad(set_to_none=True)
    weights = torch.linspace(-1.0, 1.0, logps.size(0))[:, None]
    completion_mask = mask[:, -keep:]
    loss = ((torch.exp(logps) * weights - 0.01 * entropies) * completion_mask).sum() / completion_mask.sum()
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_equal_results(model, input_ids, mask, keep, visions, groups, batch_size=None, grads=True):
    """Shared and per-row log-probs, entropies (1e-5) and gradients (1e-4 relative) agree; returns the stats."""
    ref_logps, ref_entropies = trl_logps(model, input_ids, mask, keep, visions, batch_size)
    ref_grads = gradients(model, ref_logps, ref_entropies, mask, keep) if grads else None
    result = shared_prompt_logps(model, input_ids, mask, keep, visions, groups=groups, batch_size=batch_size,
                                 compute_entropy=True)
    torch.testing.assert_close(result.logps, ref_logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.entropies, ref_entropies, atol=1e-5, rtol=0)
    assert (result.logps[mask[:, -keep:] == 0] == 0).all()
    if grads:
        ours = gradients(model, result.logps, result.entropies, mask, keep)
        assert ours.keys() == ref_grads.keys()
        for name, ref in ref_grads.items():
            error = (ours[name] - ref).norm() / ref.norm().clamp(min=1e-12)
            assert error <= 1e-4, f"{name}: relative gradient error {error:.2e}"
    return result.stats


def tiny(family, **kwargs):
    model, processor = build_tiny_vlm(family, **kwargs)
    add_fused_lm_head(model, temperature=TEMPERATURE, outputs=("log_probs", "entropy"))
    return model, processor


def mixed_rows(media):
    return [
        row("video", "What happens?", media["clip0"]),
        row("video", "What happens?", media["clip1"]),
        row("image", "What colour is this picture, and why?", media["image"]),
        row(None, "Say hi."),
    ]


def patches(vision) -> int:
    return sum(vision[k].shape[0] for k in ("pixel_values", "pixel_values_videos") if k in vision) if vision else 0


class TowerCounter:
    """Counts patch rows through the vision tower (a forward hook)."""

    def __init__(self, model):
        self.patches = 0
        self.handle = model.model.visual.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.patches += args[0].shape[0]


# ---------------------------------------------------------------------------------------------- planning
def test_generation_groups_follow_trls_sampler_across_processes():
    """trl's sampler repeats each prompt G times one after another and each process takes a consecutive slice: the
    ids are global, so a group split between two processes has one id on both, and the gathered ids are blocks."""
    assert generation_groups(6, 3) == [0, 0, 0, 1, 1, 1]
    assert generation_groups(4, 8, process_index=0) == generation_groups(4, 8, process_index=1) == [0] * 4
    gathered = [g for rank in range(3) for g in generation_groups(4, 6, process_index=rank)]
    assert gathered == [i // 6 for i in range(12)]  # what trl's view(-1, G) over the gathered rows assumes
    with pytest.raises(ValueError):
        generation_groups(4, 0)


def test_plan_chunks_keeps_groups_together_and_splits_what_does_not_fit():
    chunks = plan_chunks([0, 1, 0, 1, 2, 0], max_rows=3)
    assert [c.segments for c in chunks] == [[(0, [0, 2, 5])], [(1, [1, 3]), (2, [4])]]
    assert [c.segments for c in plan_chunks([0, 0, 0, 0], max_rows=3)] == [[(0, [0, 1, 2])], [(0, [3])]]
    assert sorted(r for c in plan_chunks([2, 0, 1, 0, 2], 2) for r in c.rows) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="max_rows must be at least 1"):
        plan_chunks([0], 0)


# ---------------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_equals_trl_per_row_for_mixed_shuffled_batches(media, family):
    """Video (two clips behind identical prompt ids), image and text prompts of different lengths, G rows each,
    shuffled: log-probs, entropies and gradients equal trl's; the vision tower sees each medium once."""
    model, processor = tiny(family)
    input_ids, mask, keep, visions, groups = rollout(model, processor, mixed_rows(media))
    prompt_lengths = mask[:, :-keep].sum(1).unique()
    assert len(prompt_lengths) == 3 and (mask[:, 0] == 0).any()  # left padding: two clips share one length

    tower = TowerCounter(model)
    stats = assert_equal_results(model, input_ids, mask, keep, visions, groups)
    per_row_patches = sum(patches(v) for v in visions)
    assert tower.patches == per_row_patches + per_row_patches // G  # the per-row pass, then each medium once
    assert stats.shared and stats.groups == 4 and stats.rows == 4 * G
    assert stats.vision_patches * G == stats.unshared_vision_patches == per_row_patches
    shared_tokens = int(mask[:, :-keep].sum()) // G + int(mask[:, -keep:].sum()) + 4 * G  # + one prompt token a row
    assert stats.lm_tokens >= shared_tokens and stats.lm_tokens <= 1.25 * shared_tokens + 4 * (keep + 1)
    assert stats.unshared_lm_tokens == input_ids.numel()


def test_a_micro_batch_that_splits_groups(media):
    """`batch_size` rows per pass: groups split across passes each compute their prompt once per pass."""
    model, processor = tiny("qwen2_5_vl")
    input_ids, mask, keep, visions, groups = rollout(model, processor, mixed_rows(media)[:3], generations=4, seed=1)
    tower = TowerCounter(model)
    with torch.no_grad():
        result = shared_prompt_logps(model, input_ids, mask, keep, visions, groups=groups, batch_size=5)
    assert tower.patches == result.stats.vision_patches
    ref, _ = trl_logps(model, input_ids, mask, keep, visions, batch_size=5)
    torch.testing.assert_close(result.logps, ref, atol=1e-5, rtol=0)
    # 12 rows, 3 groups of 4, 5 rows a pass: [g0 x4, g1 x1], [g1 x3, g2 x2], [g2 x2]
    chunks = plan_chunks(groups, 5)
    assert [[len(rows) for _, rows in c.segments] for c in chunks] == [[4, 1], [3, 2], [2]]
    expected = sum(patches(visions[rows[0]]) for c in chunks for _, rows in c.segments)
    assert result.stats.shared and result.stats.vision_patches == expected
    assert result.stats.unshared_vision_patches == sum(patches(v) for v in visions)


def test_gradient_checkpointing_and_lora(media):
    """A LoRA-wrapped policy in training mode with gradient checkpointing: the trainer's configuration."""
    from peft import LoraConfig, get_peft_model

    model, processor = build_tiny_vlm("qwen2_5_vl", seed=3)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "qkv"]))
    add_fused_lm_head(model.get_base_model(), temperature=TEMPERATURE, outputs=("log_probs", "entropy"))
    for name, parameter in model.named_parameters():  # non-zero B matrices: adapters that change the output
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)
    model.train()
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.25's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    input_ids, mask, keep, visions, groups = rollout(model, processor, mixed_rows(media)[1:], seed=2)
    assert_equal_results(model, input_ids, mask, keep, visions, groups)
    assert any("lora" in n and p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters())


def test_eager_attention(media):
    model, processor = tiny("qwen2_vl", attn_implementation="eager")
    input_ids, mask, keep, visions, groups = rollout(model, processor, mixed_rows(media)[:1] + mixed_rows(media)[2:3])
    assert_equal_results(model, input_ids, mask, keep, visions, groups, grads=False)


# ---------------------------------------------------------------------------------------------- fallbacks
def test_per_row_path_where_sharing_cannot_apply(media):
    model, processor = tiny("qwen2_5_vl")
    *text, text_groups = rollout(model, processor, [row(None, "Hi"), row(None, "Count.")])
    *singles, single_groups = rollout(model, processor, mixed_rows(media)[:3], generations=1)
    *shared, groups = rollout(model, processor, mixed_rows(media)[:2], generations=2)
    cases = [
        (text, {"groups": text_groups}, "no row has media"),
        (singles, {"groups": single_groups}, "no prompt has two rows"),
        (shared, {"groups": groups, "share": False}, "share=False"),
        (shared, {"groups": list(range(4))}, "no prompt has two rows"),  # groups of one
        (shared, {"groups": [10 + g for g in groups]}, ""),  # any labels
    ]
    for (input_ids, mask, keep, visions), kwargs, reason in cases:
        with torch.no_grad():
            result = shared_prompt_logps(model, input_ids, mask, keep, visions, compute_entropy=True, **kwargs)
            ref_logps, ref_entropies = trl_logps(model, input_ids, mask, keep, visions)
        assert result.stats.shared == (not reason) and result.stats.reason == reason
        if reason:
            assert result.stats.lm_tokens == result.stats.unshared_lm_tokens == input_ids.numel()
        tolerance = 1e-5 if result.stats.shared else 0  # the per-row path is trl's, bit for bit
        torch.testing.assert_close(result.logps, ref_logps, atol=tolerance, rtol=0)
        torch.testing.assert_close(result.entropies, ref_entropies, atol=tolerance, rtol=0)


def test_typed_errors(media):
    model, processor = build_tiny_vlm("qwen2_vl")
    input_ids, mask, keep, visions, groups = rollout(model, processor, mixed_rows(media)[:1], generations=2)
    with pytest.raises(TypeError, match="needs trl's fused LM head"):
        shared_prompt_logps(model, input_ids, mask, keep, visions, groups=groups)
    add_fused_lm_head(model)  # log-probs only
    with pytest.raises(ValueError, match="computes no entropy"):
        shared_prompt_logps(model, input_ids, mask, keep, visions, groups=groups, compute_entropy=True)
    with pytest.raises(ValueError, match="1 vision rows for a batch of 2 sequences"):
        shared_prompt_logps(model, input_ids, mask, keep, visions[:1], groups=groups)
    with pytest.raises(ValueError, match="1 group indices for a batch of 2"):
        shared_prompt_logps(model, input_ids, mask, keep, visions, groups=[0])
    *two, _ = rollout(model, processor, mixed_rows(media)[:2], generations=1)
    with pytest.raises(ValueError, match="Rows 0 and 1 are both in group 7 but their prompts or media differ"):
        shared_prompt_logps(model, *two, groups=[7, 7])
    with pytest.raises(ValueError, match="Rows 0 and 1 are both in group 7"):
        generate_with_shared_prefill(model, two[0][:, : -two[2]], two[1][:, : -two[2]], two[3], groups=[7, 7])


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_bf16_autocast_adds_no_error_beyond_bf16s_own(media, attn_implementation):
    """fp32 weights under bf16 autocast, as the trainer runs: sharing is no further from the fp32 result than the
    per-row path in the same precision is."""
    model, processor = tiny("qwen2_5_vl", attn_implementation=attn_implementation)
    input_ids, mask, keep, visions, groups = rollout(model, processor, mixed_rows(media)[:3], seed=4)
    with torch.no_grad():
        exact, _ = trl_logps(model, input_ids, mask, keep, visions)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            per_row, _ = trl_logps(model, input_ids, mask, keep, visions)
            result = shared_prompt_logps(model, input_ids, mask, keep, visions, groups=groups)
    assert result.stats.shared
    bf16_error = (per_row - exact).abs().max()
    assert 0 < bf16_error < 0.2
    assert (result.logps - exact).abs().max() <= 2 * bf16_error


# ---------------------------------------------------------------------------------------------- generation
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_generation_prefills_each_prompt_once(media, family):
    """Greedy completions and their scores equal per-row `generate`; the vision tower sees each medium once."""
    from transformers import GenerationConfig

    model, processor = build_tiny_vlm(family)
    input_ids, mask, keep, visions, groups = rollout(model, processor, mixed_rows(media), seed=5)
    prompt_ids, prompt_mask = input_ids[:, :-keep], mask[:, :-keep]
    config = GenerationConfig(
        max_new_tokens=8, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id, eos_token_id=None,
        output_scores=True, return_dict_in_generate=True,
    )
    tower = TowerCounter(model)
    with torch.no_grad():
        reference = generate_with_shared_prefill(
            model, prompt_ids, prompt_mask, visions, groups=groups, share=False, generation_config=config
        )
        per_row_patches, tower.patches = tower.patches, 0
        shared = generate_with_shared_prefill(model, prompt_ids, prompt_mask, visions, groups=groups,
                                              generation_config=config)
    assert torch.equal(shared.sequences, reference.sequences)
    assert len(set(map(tuple, reference.sequences[:, -8:].tolist()))) > 1  # prompts lead to different completions
    for ours, theirs in zip(shared.scores, reference.scores, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert per_row_patches == sum(patches(v) for v in visions) == G * tower.patches


def test_qlora_under_bf16_autocast(media, tmp_path):
    """The QLoRA recipe's model: 4-bit frozen weights, fp32 LoRA adapters, bf16 autocast. Sharing changes nothing but
    bf16 rounding: log-probs and adapter gradients agree with the per-row pass to bf16 precision."""
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

    from videorft_hf.testing import save_tiny_vlm

    path = save_tiny_vlm("qwen2_5_vl", tmp_path / "model")
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
    )
    model = AutoModelForImageTextToText.from_pretrained(path, quantization_config=quantization, dtype=torch.bfloat16)
    processor = AutoProcessor.from_pretrained(path)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.05)
    add_fused_lm_head(model.get_base_model(), temperature=TEMPERATURE, outputs=("log_probs", "entropy"))
    model.train()
    input_ids, mask, keep, visions, groups = rollout(model, processor, mixed_rows(media)[1:], seed=6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref_logps, ref_entropies = trl_logps(model, input_ids, mask, keep, visions)
        ref_grads = gradients(model, ref_logps, ref_entropies, mask, keep)
        result = shared_prompt_logps(model, input_ids, mask, keep, visions, groups=groups, compute_entropy=True)
        grads = gradients(model, result.logps, result.entropies, mask, keep)
    assert result.stats.shared and getattr(model, "is_loaded_in_4bit", False)
    assert (result.logps - ref_logps).abs().max() < 0.02  # bf16 rounding: 3e-3 measured; log-probs are about -6
    assert grads.keys() == ref_grads.keys() and any("lora_A" in name for name in grads)
    for name, ref in ref_grads.items():
        assert (grads[name] - ref).norm() <= 0.05 * ref.norm(), name  # 1.7e-2 at most, measured


# ------------------------------------------------------------------------------------------------ in the trainer
def _parity_reward(completions, **kwargs):
    return [float(i % 2) for i in range(len(completions))]


def _train(media, tmp_path, share: bool, text_only: bool = False, **overrides):
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText

    from videorft_hf.configs import VideoGRPOConfig
    from videorft_hf.testing import save_tiny_vlm
    from videorft_hf.trainer import VideoGRPOTrainer

    model_dir = tmp_path / "model"
    if not model_dir.exists():
        save_tiny_vlm("qwen2_5_vl", model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    if text_only:
        rows = [row(None, f"Say something about {i}.") for i in range(2)]
    else:
        rows = [row("video", "What happens?", media["clip0"]), row("image", "What colour?", media["image"])]
        rows = [{"prompt": r["prompt"], "video": r.get("video"), "image": r.get("image")} for r in rows]
    args = VideoGRPOConfig(
        output_dir=str(tmp_path / f"out{share}"), per_device_train_batch_size=4, num_generations=4,
        steps_per_generation=2, num_iterations=2, max_completion_length=5, max_steps=4, learning_rate=1e-3,
        beta=0.04, loss_type="grpo", report_to=[], use_cpu=True, bf16=False, logging_steps=1, save_strategy="no",
        seed=0, share_prompt_compute=share, video_sampling_preset="video-r1-train", video_min_frames=4,
        video_max_frames=4, video_min_pixels=16 * 784, video_max_pixels=16 * 784, image_max_pixels=16 * 784,
    )
    for key, value in overrides.items():
        setattr(args, key, value)
    trainer = VideoGRPOTrainer(model, [_parity_reward], args=args, train_dataset=Dataset.from_list(rows * 2))
    vision = {"patches": 0}
    trainer.model.model.visual.register_forward_pre_hook(
        lambda module, args: vision.__setitem__("patches", vision["patches"] + args[0].shape[0])
    )
    trainer.train()
    return [h for h in trainer.state.log_history if "loss" in h], vision["patches"]


def test_trainer_results_equal_with_sharing_on_and_off(media, tmp_path):
    # steps_per_generation=2 (micro-batches that split groups) and num_iterations=2 (old log-probs reused), beta > 0.
    (on, patches_on), (off, patches_off) = _train(media, tmp_path, share=True), _train(media, tmp_path, share=False)
    assert len(on) == len(off) == 4
    # Generation, reference and policy passes: the tower sees each prompt's media once, not once per completion
    # (the micro-batches of 4 shuffled rows hold 1-4 rows of a prompt, so the ratio is below G = 4).
    assert patches_off / patches_on > 2
    for shared, plain in zip(on, off, strict=True):
        for key in ("loss", "grad_norm", "kl", "entropy"):
            assert shared[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-6), key
        assert shared["prompt_sharing/shared"] == 1.0 and plain["prompt_sharing/shared"] == 0.0
        assert shared["prompt_sharing/vision_patch_ratio"] > 1.0 and shared["prompt_sharing/lm_token_ratio"] > 1.0
        assert plain["prompt_sharing/lm_token_ratio"] == 1.0


def test_keep_groups_together_reorders_a_permutation_by_group():
    assert keep_groups_together([3, 0, 2, 1], [0, 0, 1, 1]) == [3, 2, 0, 1]
    assert keep_groups_together([2, 5, 0, 1, 4, 3], [0, 1, 2, 0, 1, 2]) == [2, 5, 0, 3, 1, 4]
    assert keep_groups_together([1, 0], [0, 0]) == [1, 0]  # one group: the permutation as drawn


def test_micro_batches_hold_whole_groups_when_the_update_allows(media, tmp_path):
    """Two prompts x G = 4 in two micro-batches of 4 that make one optimizer step: with sharing on, each micro-batch
    holds one whole group (vision and LM ratios of a whole group in every pass), and the run logs what the per-row
    run with trl's row shuffle logs (the same rows' gradients are summed into each update, from the same draw)."""
    shape = {"gradient_accumulation_steps": 2, "steps_per_generation": 2, "num_iterations": 1}
    (on, patches_on), (off, patches_off) = (
        _train(media, tmp_path, share=True, **shape), _train(media, tmp_path, share=False, **shape)
    )
    assert len(on) == len(off) == 4
    for shared, plain in zip(on, off, strict=True):
        for key in ("loss", "grad_norm"):
            assert shared[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-6), key
    # G in every step this class encodes (the last step's two prompts are images: trl's own image path, no sharing).
    ratios = [h["prompt_sharing/vision_patch_ratio"] for h in on if "prompt_sharing/vision_patch_ratio" in h]
    assert ratios == [4.0, 4.0, 4.0]  # every micro-batch is one whole group (trl's shuffle: 1 to 4 rows of one)
    # Generation (once per prompt either way), reference and policy passes.
    assert patches_off / patches_on > 3


def test_groups_are_kept_together_only_where_the_update_is_unchanged(media, tmp_path):
    from datasets import Dataset

    from videorft_hf.configs import VideoGRPOConfig
    from videorft_hf.testing import save_tiny_vlm
    from videorft_hf.trainer import VideoGRPOTrainer

    model_dir = save_tiny_vlm("qwen2_5_vl", tmp_path / "model")
    dataset = Dataset.from_list([row("video", "What happens?", media["clip0"])] * 4)

    def keeps(**kwargs):
        args = VideoGRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=4,
                               report_to=[], use_cpu=True, bf16=False, **kwargs)
        return VideoGRPOTrainer(str(model_dir), [_parity_reward], args=args, train_dataset=dataset).keeps_groups_together

    assert keeps(gradient_accumulation_steps=2, loss_type="grpo")
    assert keeps(gradient_accumulation_steps=2, loss_type="dapo")
    assert not keeps(gradient_accumulation_steps=1, steps_per_generation=2, loss_type="grpo")  # two updates per batch
    assert not keeps(gradient_accumulation_steps=2, loss_type="bnpo")  # normalised per micro-batch
    assert not keeps(gradient_accumulation_steps=2, loss_type="grpo", share_prompt_compute=False)
    assert not keeps(gradient_accumulation_steps=1, loss_type="grpo")  # one micro-batch: nothing to split


def test_text_only_batches_keep_trls_path(media, tmp_path):
    history, patches = _train(media, tmp_path, share=True, text_only=True)
    assert patches == 0
    assert history and not any("prompt_sharing/shared" in h for h in history)
