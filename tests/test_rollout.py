"""rollout: the static-cache engine generates what `model.generate` generates.

References are transformers' own `model.generate` (called here with every row's vision tensors, no sharing) and the
model's own forward over `prompt + completion`; the engine is never compared with itself. The tiny models get
weights spread wider than their initialisation (`spread`), so their logits separate the tokens (a greedy gap of
about 0.05 against fp32 errors near 1e-6) and greedy completions vary from token to token.
"""

import pytest
import torch
from transformers import GenerationConfig

from videorft_hf.internals import apply_position_rule
from videorft_hf.processing import (
    collate_vision,
    encode_prompt,
    load_row_media,
    mm_token_type_ids,
    model_sampling_config,
    render_prompt,
)
from videorft_hf.prompt_sharing import generation_groups
from videorft_hf.rollout import (
    GenerationWeights,
    RolloutEngine,
    UnsupportedGenerationError,
    bucket_rows,
    logits_processors,
    resolve_generation_config,
    split_vision,
)
from videorft_hf.testing import build_tiny_vlm, write_test_image, write_test_video
from videorft_hf.video import VideoSamplingConfig

SAMPLING = VideoSamplingConfig(min_frames=4, max_frames=4, min_pixels=16 * 784, max_pixels=16 * 784)
G = 2
NEVER = 10_000  # an end-of-sequence id outside the vocabulary: generation runs its full length


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    return {
        # 30 s, 4 frames sampled: 15 s per temporal grid, so Qwen2.5-VL's temporal positions reach 30 past the
        # video's start, past its spatial ones (4): where transformers 5.3-5.25 misplace the text after a video.
        "clip": str(write_test_video(root / "clip.mp4", num_frames=60, fps=2, width=56, height=56)),
        "image": str(write_test_image(root / "still.png", width=56, height=84, index=3)),
    }


def spread(model, std=0.3, seed=0):
    """Matrices drawn with a wider spread than the tiny models' initialisation: distinct, well-separated logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return model


def tiny(family="qwen2_5_vl", **kwargs):
    """A tiny model whose own forward and generate follow Qwen's M-RoPE rule, as the package runs them (the engine
    always does; transformers 5.3-5.25 alone misplace the text after the test clip on Qwen2.5-VL)."""
    model, processor = build_tiny_vlm(family, **kwargs)
    spread(model)
    apply_position_rule(model)
    model.generation_config.eos_token_id = None  # the tests choose when generation ends
    return model, processor


def row(kind, text, path=None):
    content = ([{"type": kind}] if kind else []) + [{"type": "text", "text": text}]
    out = {"prompt": [{"role": "user", "content": content}]}
    if kind:
        out[kind] = path
    return out


def mixed_rows(media):
    return [
        row("video", "What happens?", media["clip"]),
        row("image", "What colour is this picture, and why?", media["image"]),
        row(None, "Say hi."),
    ]


def batch(model, processor, rows, generations=G):
    """Left-padded prompts, G rows each (a group's rows share one vision dict, as the trainer hands them out)."""
    config = model_sampling_config(SAMPLING, model.config, processor)
    prompts, visions = [], []
    for r in rows:
        media = load_row_media(r, config)
        ids, vision = encode_prompt(processor, render_prompt(processor, r["prompt"]), media.videos, media.images)
        prompts += [ids] * generations
        visions += [vision or None] * generations
    pad = processor.tokenizer.pad_token_id
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask, visions


def blocks(ids, generations=G):
    """The group ids of `batch`'s layout: each prompt's `generations` rows one after another."""
    return generation_groups(ids.size(0), generations)


def reference_generate(model, ids, mask, visions, config):
    """transformers' generate with every row's vision tensors (no prompt sharing)."""
    extra = collate_vision(visions)
    if extra:
        extra["mm_token_type_ids"] = mm_token_type_ids(ids, model.config.image_token_id, model.config.video_token_id)
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **extra)


def forward_logprobs(model, sequences, prompt_mask, visions, width):
    """Log-probs of the completion tokens from one forward over `prompt + completion` (the model's own positions)."""
    mask = torch.cat([prompt_mask, torch.ones_like(sequences[:, width:])], dim=1)
    extra = collate_vision(visions)
    if extra:
        extra["mm_token_type_ids"] = mm_token_type_ids(
            sequences, model.config.image_token_id, model.config.video_token_id
        )
    with torch.no_grad():
        logits = model(input_ids=sequences, attention_mask=mask, **extra).logits.float()
    logps = torch.log_softmax(logits[:, width - 1 : -1], dim=-1)
    return logps.gather(2, sequences[:, width:, None]).squeeze(2)


def greedy(processor, steps=32, **overrides):
    settings = dict(max_new_tokens=steps, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id,
                    eos_token_id=NEVER, output_scores=True, return_dict_in_generate=True)
    return GenerationConfig(**{**settings, **overrides})


def assert_varied(completions):
    """Greedy is meaningful: rows differ, and no row repeats one token."""
    rows = [tuple(r) for r in completions.tolist()]
    assert len(set(rows)) > 1 and all(len(set(r)) > 3 for r in rows), rows


class VisionCounter:
    """Counts patch rows through a vision tower (a forward hook)."""

    def __init__(self, visual):
        self.patches = 0
        visual.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.patches += args[0].shape[0]


# ---------------------------------------------------------------------------------------------- pure parts
def test_bucket_rows():
    assert [bucket_rows(n) for n in (1, 2, 3, 8, 9)] == [1, 2, 4, 8, 16]
    assert [bucket_rows(n, [4, 12, 24]) for n in (1, 5, 24, 25)] == [4, 12, 24, 32]
    with pytest.raises(ValueError, match="rows must be at least 1"):
        bucket_rows(0)


def test_split_vision_inverts_collate(media):
    model, processor = build_tiny_vlm("qwen2_5_vl")
    rows = mixed_rows(media) + [row("video", "Again?", media["clip"])]
    ids, _, visions = batch(model, processor, rows, generations=1)
    split = split_vision(ids, collate_vision(visions), image_token_id=model.config.image_token_id,
                         video_token_id=model.config.video_token_id, merge_size=2)
    assert [s is None for s in split] == [v is None for v in visions] == [False, False, True, False]
    for ours, theirs in zip(split, visions, strict=True):
        if theirs is not None:
            assert ours.keys() == theirs.keys()
            assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    tokens = {"image_token_id": model.config.image_token_id, "video_token_id": model.config.video_token_id}
    video_tokens = int((ids[0] == model.config.video_token_id).sum())
    with pytest.raises(UnsupportedGenerationError, match=f"Row 0 has {video_tokens} video placeholder tokens, but the "
                       f"video_grid_thw left for it give {video_tokens // 4}"):
        split_vision(ids[:1], collate_vision(visions[:1]), **tokens, merge_size=4)
    with pytest.raises(UnsupportedGenerationError, match="1 of 1 image_grid_thw entries have no placeholder tokens"):
        split_vision(ids[2:3], collate_vision(visions[1:2]), **tokens, merge_size=2)


def test_split_vision_several_media_per_row():
    """Two images in the first row, none in the second, a video in the third (merge 2: a 1x4x4 grid is 4 tokens)."""
    image, video = 5, 6
    ids = torch.tensor([[image] * 4 + [1] + [image] * 8, [1] * 13, [video] * 8 + [1] * 5])
    vision = {
        "pixel_values": torch.arange(48.0)[:, None], "image_grid_thw": torch.tensor([[1, 4, 4], [1, 4, 8]]),
        "pixel_values_videos": -torch.arange(32.0)[:, None], "video_grid_thw": torch.tensor([[2, 4, 4]]),
        "second_per_grid_ts": torch.tensor([0.5]),
    }
    rows = split_vision(ids, vision, image_token_id=image, video_token_id=video, merge_size=2)
    assert rows[1] is None and rows[0].keys() == {"pixel_values", "image_grid_thw"}
    assert torch.equal(rows[0]["pixel_values"], vision["pixel_values"]) and rows[0]["image_grid_thw"].shape == (2, 3)
    assert torch.equal(rows[2]["pixel_values_videos"], vision["pixel_values_videos"])
    assert torch.equal(rows[2]["second_per_grid_ts"], torch.tensor([0.5]))


def test_generation_config_is_resolved_as_generate_resolves_it():
    model, processor = tiny()
    model.generation_config.top_k = 7
    model.generation_config.repetition_penalty = 1.1
    config = resolve_generation_config(GenerationConfig(do_sample=True, repetition_penalty=1.3), model)
    assert (config.top_k, config.repetition_penalty, config.top_p) == (7, 1.3, 1.0)  # model's, ours, global
    config.temperature, config.min_p, config.suppress_tokens = 0.5, 0.1, [3]
    names = [type(p).__name__ for p in logits_processors(config, torch.ones(1, 2, dtype=torch.long))]
    assert names == ["RepetitionPenaltyLogitsProcessor", "SuppressTokensLogitsProcessor", "TemperatureLogitsWarper",
                     "TopKLogitsWarper", "MinPLogitsWarper"]
    with pytest.raises(UnsupportedGenerationError) as error:
        resolve_generation_config(GenerationConfig(num_beams=2, no_repeat_ngram_size=3, max_new_tokens=4))
    assert str(error.value) == (
        "The rollout engine does not reproduce these generation settings: num_beams=2, no_repeat_ngram_size=3. Unset "
        "them, or generate with the model's own generate."
    )
    # typical_p only acts when sampling, as in generate
    resolve_generation_config(GenerationConfig(do_sample=False, typical_p=0.5, max_new_tokens=4))


# ---------------------------------------------------------------------------------------------- greedy, fp32
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_greedy_equals_generate(media, family):
    """Video, image and text rows in one left-padded batch, G rows per prompt: 32 greedy tokens equal generate's,
    the per-step probabilities agree within 1e-5, and each prompt's media go through the vision tower once."""
    model, processor = tiny(family)
    ids, mask, visions = batch(model, processor, mixed_rows(media))
    config = greedy(processor)
    reference = reference_generate(model, ids, mask, visions, config)
    engine = RolloutEngine(model)
    tower = VisionCounter(engine.weights.module.model.visual)
    out = engine.rollout(ids, mask, visions, groups=blocks(ids), generation_config=config, output_scores=True)
    width = ids.size(1)
    assert reference.sequences.shape == (3 * G, width + 32)
    assert_varied(reference.sequences[:, width:])
    assert torch.equal(out.sequences, reference.sequences)
    for ours, theirs in zip(out.scores, reference.scores, strict=True):
        torch.testing.assert_close(ours.softmax(-1), theirs.softmax(-1), atol=1e-5, rtol=0)
    patches = sum(v[k].shape[0] for v in visions if v for k in ("pixel_values", "pixel_values_videos") if k in v)
    assert tower.patches * G == patches
    assert (out.stats.rows, out.stats.groups, out.stats.bucket, out.stats.steps) == (6, 3, 8, 32)


def test_positions_follow_qwens_rule_where_transformers_deviates(media):
    """On the 30 s clip, the engine generates what generate does on a model that follows Qwen's rule, and (on a
    transformers version that misplaces the text after a video) not what the model's own positions give."""
    model, processor = build_tiny_vlm("qwen2_5_vl")
    spread(model)
    model.generation_config.eos_token_id = None
    ids, mask, visions = batch(model, processor, mixed_rows(media)[:1])
    config = greedy(processor, steps=16)
    as_installed = reference_generate(model, ids, mask, visions, config).sequences
    out = RolloutEngine(model).rollout(ids, mask, visions, groups=blocks(ids), generation_config=config)
    apply_position_rule(model)
    assert torch.equal(out.sequences, reference_generate(model, ids, mask, visions, config).sequences)
    vision = collate_vision(visions)
    grids = {k: vision[k] for k in ("video_grid_thw", "second_per_grid_ts")}
    types = mm_token_type_ids(ids, model.config.image_token_id, model.config.video_token_id)
    installed = type(model.model).get_rope_index(model.model, ids, mm_token_type_ids=types, attention_mask=mask,
                                                 **grids)[0]
    if not torch.equal(installed, model.model.get_rope_index(ids, mm_token_type_ids=types, attention_mask=mask,
                                                             **grids)[0]):
        assert not torch.equal(out.sequences, as_installed)


@pytest.mark.parametrize("stop_check_every", [1, 8])
def test_end_of_sequence_per_row(media, stop_check_every):
    """A list of end-of-sequence ids: each row stops at its own, padding follows, generation stops when all have
    ended, as in generate (checked every step, or every 8 and trimmed)."""
    model, processor = tiny()
    ids, mask, visions = batch(model, processor, mixed_rows(media), generations=1)
    first = reference_generate(model, ids, mask, visions, greedy(processor, steps=24)).sequences[:, ids.size(1):]
    eos = [int(first[0, 3]), int(first[1, 9]), int(first[2, 6])]  # each row ends, at its own step
    config = greedy(processor, steps=24, eos_token_id=eos)
    reference = reference_generate(model, ids, mask, visions, config)
    engine = RolloutEngine(model, stop_check_every=stop_check_every)
    out = engine.rollout(ids, mask, visions, groups=blocks(ids, 1), generation_config=config, return_logprobs=True, output_scores=True)
    assert torch.equal(out.sequences, reference.sequences) and len(out.scores) == len(reference.scores)
    completion = out.sequences[:, ids.size(1):]
    ended = torch.isin(completion, torch.tensor(eos))
    assert ended.any(1).all() and out.stats.steps < 24  # every row ended, so the loop stopped early
    after = ended.int().cumsum(1) - ended.int() > 0  # positions after each row's first end of sequence
    assert (completion[after] == processor.tokenizer.pad_token_id).all() and (out.logprobs[after] == 0).all()
    assert out.stats.new_tokens == int((~after).sum())


def test_groups_given_and_checked(media):
    model, processor = tiny()
    ids, mask, visions = batch(model, processor, mixed_rows(media)[1:])
    engine = RolloutEngine(model)
    out = engine.rollout(ids, mask, visions, generation_config=greedy(processor, steps=4), groups=[5, 5, 9, 9])
    assert out.stats.groups == 2
    with pytest.raises(UnsupportedGenerationError, match="Rows 0 and 2 are both in group 1 but their prompts differ"):
        engine.rollout(ids, mask, visions, generation_config=greedy(processor, steps=4), groups=[1, 1, 1, 1])


# ---------------------------------------------------------------------------------------------- sampling
SAMPLING_OPTIONS = {
    "temperature": {"temperature": 0.7},
    "top_k": {"top_k": 5},
    "top_p": {"top_p": 0.8, "top_k": 0},
    "min_p": {"min_p": 0.05, "top_k": 0},
    "repetition_penalty": {"repetition_penalty": 1.5},
    "suppress_tokens": {"suppress_tokens": [137, 93, 287]},  # three ordinary tokens
    "all": {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.02, "repetition_penalty": 1.2},
}


@pytest.mark.parametrize("option", SAMPLING_OPTIONS)
def test_sampling_distributions_equal_generates(media, option):
    """At every step, the engine's processed probabilities equal those of generate continuing the same prefix
    (within 1e-5), the sampled tokens are drawn from them, and the returned log-probs are their log at the token."""
    model, processor = tiny()
    ids, mask, visions = batch(model, processor, mixed_rows(media)[::2])  # video and text rows
    pad = processor.tokenizer.pad_token_id
    settings = {"do_sample": True, "pad_token_id": pad, "eos_token_id": NEVER, "top_k": 0, **SAMPLING_OPTIONS[option]}
    steps = 6
    torch.manual_seed(0)
    out = RolloutEngine(model).rollout(ids, mask, visions, groups=blocks(ids), generation_config=GenerationConfig(
        max_new_tokens=steps, **settings), output_scores=True, return_logprobs=True)
    width = ids.size(1)
    one_step = GenerationConfig(max_new_tokens=1, output_scores=True, return_dict_in_generate=True, **settings)
    for step in range(steps):
        prefix = out.sequences[:, : width + step]
        prefix_mask = torch.cat([mask, torch.ones_like(prefix[:, width:])], dim=1)
        theirs = reference_generate(model, prefix, prefix_mask, visions, one_step).scores[0]
        ours = out.scores[step]
        torch.testing.assert_close(ours.softmax(-1), theirs.softmax(-1), atol=1e-5, rtol=0)
        assert torch.equal(torch.isinf(ours), torch.isinf(theirs))  # the same tokens are cut
        token = out.sequences[:, width + step]
        assert torch.isfinite(ours.gather(1, token[:, None])).all()
        torch.testing.assert_close(out.logprobs[:, step], ours.log_softmax(-1).gather(1, token[:, None]).squeeze(1))
    if option == "suppress_tokens":
        assert not torch.isin(out.sequences[:, width:], torch.tensor([137, 93, 287])).any()


def test_same_seed_same_tokens_as_generate(media):
    """One multinomial draw per row and step on the global generator, as generate draws: with probabilities equal
    to float rounding, a seed gives generate's tokens."""
    model, processor = tiny()
    ids, mask, visions = batch(model, processor, mixed_rows(media))
    config = GenerationConfig(max_new_tokens=16, do_sample=True, temperature=0.9, top_p=0.95, top_k=0,
                              pad_token_id=processor.tokenizer.pad_token_id, eos_token_id=NEVER)
    torch.manual_seed(3)
    reference = reference_generate(model, ids, mask, visions, config)
    torch.manual_seed(3)
    out = RolloutEngine(model).rollout(ids, mask, visions, groups=blocks(ids), generation_config=config)
    assert torch.equal(out.sequences, reference)
    assert len(set(map(tuple, reference[:, ids.size(1):].tolist()))) == 3 * G  # a group's rows sample apart


def test_logprobs_equal_a_forward_over_the_completion(media):
    """Temperature sampling with the vision placeholders suppressed (as the trainer samples): the returned log-probs
    are the model's own `log_softmax(logits / T)` over the tokens left, at the sampled tokens, from one forward over
    prompt + completion (independent of generate)."""
    model, processor = tiny()
    ids, mask, visions = batch(model, processor, mixed_rows(media))
    placeholders = [model.config.image_token_id, model.config.video_token_id]
    config = GenerationConfig(max_new_tokens=12, do_sample=True, temperature=0.6, top_k=0,
                              suppress_tokens=placeholders, pad_token_id=processor.tokenizer.pad_token_id,
                              eos_token_id=NEVER)
    torch.manual_seed(1)
    out = RolloutEngine(model).rollout(ids, mask, visions, groups=blocks(ids), generation_config=config, return_logprobs=True)
    model.generation_config.temperature = 0.6
    mask_full = torch.cat([mask, torch.ones_like(out.sequences[:, ids.size(1):])], dim=1)
    extra = collate_vision(visions)
    extra["mm_token_type_ids"] = mm_token_type_ids(out.sequences, model.config.image_token_id,
                                                   model.config.video_token_id)
    with torch.no_grad():
        logits = model(input_ids=out.sequences, attention_mask=mask_full, **extra).logits.float()
    width = ids.size(1)
    scaled = (logits[:, width - 1 : -1] / 0.6).index_fill(2, torch.tensor(placeholders), -float("inf"))
    expected = torch.log_softmax(scaled, -1).gather(2, out.sequences[:, width:, None])
    torch.testing.assert_close(out.logprobs, expected.squeeze(2), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- adapters
def _lora(model, seed=1):
    from peft import LoraConfig, get_peft_model

    with torch.random.fork_rng(devices=[]):  # peft draws lora_A from the global generator: the same every run
        torch.manual_seed(seed)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model


@pytest.mark.parametrize("merge_lora", [False, True])
def test_lora_greedy_equals_generate(media, merge_lora):
    """peft LoRA (adapters that change the output): greedy tokens equal generate's, with the adapters run as they
    are or merged into dense copies."""
    model, processor = tiny()
    ids, mask, visions = batch(model, processor, mixed_rows(media))
    model = _lora(model)
    config = greedy(processor)
    reference = reference_generate(model, ids, mask, visions, config)
    with model.disable_adapter():
        plain = reference_generate(model, ids, mask, visions, config)
    assert not torch.equal(plain.sequences, reference.sequences)  # the adapters matter
    engine = RolloutEngine(model, merge_lora=merge_lora)
    assert engine.weights.mode == ("merged" if merge_lora else "policy")
    out = engine.rollout(ids, mask, visions, groups=blocks(ids), generation_config=config)
    assert torch.equal(out.sequences, reference.sequences)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    model, processor = tiny()
    path = tmp_path_factory.mktemp("tiny_spread")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _qlora(path, compute_dtype):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=compute_dtype)
    model = AutoModelForImageTextToText.from_pretrained(path, quantization_config=quantization, dtype=compute_dtype)
    apply_position_rule(model)
    model.generation_config.eos_token_id = None
    model = _lora(model)
    # bitsandbytes repacks 4-bit weights for its CPU kernel at the first eval-mode forward on this CPU, and fails on
    # layers this small; nothing here has dropout, so train mode computes the same.
    model.train()
    for parameter in model.parameters():  # trainable adapters in float32, as modeling.keep_updates leaves them
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    return model, AutoProcessor.from_pretrained(path)


@pytest.mark.parametrize("merge_lora", [False, True])
def test_qlora_greedy_equals_generate(media, tiny_checkpoint, merge_lora):
    """4-bit base (bitsandbytes) with LoRA adapters, computing in float32: greedy tokens equal generate's with the
    4-bit base and adapters in the step (a) and with merged dense copies W0 + s * B @ A (b)."""
    model, processor = _qlora(tiny_checkpoint, torch.float32)
    assert model.is_loaded_in_4bit
    ids, mask, visions = batch(model, processor, mixed_rows(media))
    config = greedy(processor)
    reference = reference_generate(model, ids, mask, visions, config)
    assert_varied(reference.sequences[:, ids.size(1):])
    engine = RolloutEngine(model, merge_lora=merge_lora)
    out = engine.rollout(ids, mask, visions, groups=blocks(ids), generation_config=config)
    assert torch.equal(out.sequences, reference.sequences)
    if merge_lora:
        assert engine.weights.mode == "merged" and len(engine.weights.merged) > 10


# ---------------------------------------------------------------------------------------------- bf16
def test_bf16_is_as_close_to_fp32_as_transformers_bf16(media):
    """A bf16 policy with float32 LoRA adapters (the precision rule), generating in bf16. The bf16 tolerance is
    bf16's own error: the difference between transformers' bf16 forward (under the trainer's autocast) and the fp32
    computation, on the same tokens. The engine's log-probs stay within twice that, in the worst token and on
    average (measured: 1.07x and 1.00x; over twelve adapter draws at most 1.14x). It rounds the same numbers in
    another order (bf16 copies of the adapters, a static cache, one query per step), so its error is bf16's, not a
    fixed number: bf16 keeps 8 significant bits, and on these wide-spread tiny weights, whose logits reach about 10,
    that is 0.26 in the worst token and 0.04 on average here."""
    fp32, processor = tiny()
    fp32 = _lora(fp32)
    bf16, _ = tiny(dtype=torch.bfloat16)
    bf16 = _lora(bf16)
    bf16.load_state_dict({k: v.to(torch.bfloat16) for k, v in fp32.state_dict().items()})
    for parameter in bf16.parameters():
        if parameter.requires_grad:  # adapters in float32, from the fp32 model (not rounded)
            parameter.data = parameter.data.float()
    with torch.no_grad():
        for (_, a), (_, b) in zip(fp32.named_parameters(), bf16.named_parameters(), strict=True):
            if b.requires_grad:
                b.copy_(a)
    ids, mask, visions = batch(fp32, processor, mixed_rows(media))
    engine = RolloutEngine(bf16, dtype=torch.bfloat16)
    assert engine.weights.mode == "copies" and all(c.dtype == torch.bfloat16 for _, c in engine.weights.copies)
    config = greedy(processor, steps=16, suppress_tokens=[fp32.config.image_token_id, fp32.config.video_token_id])
    out = engine.rollout(ids, mask, visions, groups=blocks(ids), generation_config=config, return_logprobs=True)
    assert out.sequences.dtype == torch.long and out.logprobs.dtype == torch.float32
    width = ids.size(1)
    exact = forward_logprobs(fp32, out.sequences, mask, visions, width)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        transformers_bf16 = forward_logprobs(bf16, out.sequences, mask, visions, width)
    reference_error, error = (transformers_bf16 - exact).abs(), (out.logprobs - exact).abs()
    assert reference_error.mean() > 1e-3  # bf16 is in play
    assert error.max() <= 2 * reference_error.max() and error.mean() <= 2 * reference_error.mean()


# ---------------------------------------------------------------------------------------------- weights
def test_bf16_policy_generates_with_its_own_tensors():
    model, _ = tiny(dtype=torch.bfloat16)
    weights = GenerationWeights(model, torch.bfloat16)
    assert weights.mode == "policy" and weights.nbytes() == 0
    ours = {name: p.data_ptr() for name, p in weights.module.named_parameters()}
    assert ours == {name: p.data_ptr() for name, p in model.named_parameters()}
    assert weights.module is not model and not weights.module.training


def test_weights_that_change_dtype_after_the_engine_is_built(media):
    """The precision rule run after the engine was built (bf16 trainable weights upcast to float32 in place): the
    next rollout says so instead of generating in mixed precision; `rebuild()` makes bf16 copies of them."""
    model, processor = tiny(dtype=torch.bfloat16)
    engine = RolloutEngine(model)
    from types import SimpleNamespace

    from videorft_hf.modeling import keep_updates

    keep_updates(model, SimpleNamespace(learning_rate=1e-6))
    ids, mask, visions = batch(model, processor, mixed_rows(media)[2:])
    with pytest.raises(UnsupportedGenerationError, match="weights changed dtype since the rollout engine was built"):
        engine.rollout(ids, mask, visions, groups=blocks(ids), generation_config=greedy(processor, steps=2))
    engine.rebuild()
    assert engine.weights.mode == "copies"
    assert engine.rollout(ids, mask, visions, groups=blocks(ids), generation_config=greedy(processor, steps=2)).sequences.shape[1] > 2


def test_copies_refresh_in_place_and_equal_the_fp32_weights_rounded():
    """float32 trainable weights: bf16 copies, rewritten in place after an optimizer step (hooked with
    `refresh_after`), equal to the new float32 weights rounded to bf16; the policy itself is untouched."""
    model, _ = tiny()
    model.train()
    engine = RolloutEngine(model, dtype=torch.bfloat16)
    copies = engine.weights.copies
    assert len(copies) == len(list(model.parameters()))
    addresses = [c.data_ptr() for _, c in copies]
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    engine.refresh_after(optimizer)
    before = [c.clone() for _, c in copies]
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    optimizer.step()
    assert [c.data_ptr() for _, c in copies] == addresses
    changed = 0
    for (source, copy), old in zip(copies, before, strict=True):
        assert torch.equal(copy, source.detach().to(torch.bfloat16))
        changed += not torch.equal(copy, old)
    assert changed == len(copies)
    assert model.training and all(p.dtype == torch.float32 for p in model.parameters())


def test_merged_weights_refresh_in_place(tiny_checkpoint):
    """QLoRA option (b): each merged weight is dequantized W0 + (alpha / r) * B @ A, rewritten in place."""
    model, _ = _qlora(tiny_checkpoint, torch.bfloat16)
    weights = GenerationWeights(model, torch.bfloat16, merge_lora=True)
    layer, merged = next((lo, m) for lo, m in weights.merged if type(lo.get_base_layer().weight).__name__ == "Params4bit")
    address = merged.data_ptr()
    with torch.no_grad():
        layer.lora_B["default"].weight.add_(0.5)
    weights.refresh()
    import bitsandbytes.functional as bnb

    base = layer.get_base_layer().weight
    w0 = bnb.dequantize_4bit(base.data, base.quant_state).float()
    expected = w0 + (8 / 4) * layer.lora_B["default"].weight.float() @ layer.lora_A["default"].weight.float()
    assert merged.data_ptr() == address and merged.dtype == torch.bfloat16
    assert torch.equal(merged, expected.to(torch.bfloat16))


# ---------------------------------------------------------------------------------------------- drop-in and cache
def test_generate_stands_in_for_model_generate(media):
    """Called as trl calls `model.generate` (collated vision tensors, mm_token_type_ids, generation_config and
    keyword settings), the engine returns generate's sequences: an image batch and a text batch."""
    model, processor = tiny()
    engine = RolloutEngine(model)
    for rows in (mixed_rows(media)[1:2] + [row("image", "Why?", media["image"])], mixed_rows(media)[2:]):
        ids, mask, visions = batch(model, processor, rows)
        inputs = {"input_ids": ids, "attention_mask": mask, **collate_vision(visions)}
        if any(visions):
            inputs["mm_token_type_ids"] = mm_token_type_ids(ids, model.config.image_token_id,
                                                            model.config.video_token_id)
        config = GenerationConfig(do_sample=False, pad_token_id=processor.tokenizer.pad_token_id, eos_token_id=NEVER)
        with torch.no_grad():
            reference = model.generate(**inputs, generation_config=config, max_new_tokens=10)
        assert torch.equal(engine.generate(**inputs, generation_config=config, max_new_tokens=10), reference)
    with pytest.raises(UnsupportedGenerationError, match=r"does not take \['labels'\]"):
        engine.generate(ids, mask, generation_config=config, labels=ids)


def test_static_cache_is_reused_per_shape(media):
    model, processor = tiny()
    engine = RolloutEngine(model, length_multiple=64)
    ids, mask, visions = batch(model, processor, mixed_rows(media)[1:])  # 4 rows
    config = greedy(processor, steps=8)
    length = -(-(ids.size(1) + 8) // 64) * 64
    first = engine.rollout(ids, mask, visions, groups=blocks(ids), generation_config=config)
    assert engine.cache_shapes == {4: length} and engine.allocations == 1
    out = engine.rollout(ids[:3], mask[:3], visions[:3], groups=blocks(ids[:3]), generation_config=config)  # 3 rows: the same bucket
    assert engine.cache_shapes == {4: length} and engine.allocations == 1
    assert out.stats.bucket == 4 and out.stats.cache_length == length
    assert torch.equal(out.sequences, first.sequences[:3])  # nothing left over from the previous call
    engine.rollout(ids, mask, visions, groups=blocks(ids), generation_config=greedy(processor, steps=length))  # longer: a new cache
    assert engine.cache_shapes == {4: -(-(ids.size(1) + length) // 64) * 64} and engine.allocations == 2


def test_inputs_the_engine_refuses(media):
    model, processor = tiny()
    engine = RolloutEngine(model)
    ids, mask, visions = batch(model, processor, mixed_rows(media)[1:])
    with pytest.raises(UnsupportedGenerationError, match=r"must end in a real token .* rows \[2, 3\] end in padding"):
        engine.rollout(ids.flip(1), mask.flip(1), visions, groups=blocks(ids.flip(1)), generation_config=greedy(processor))
    flash, _ = build_tiny_vlm("qwen2_5_vl", attn_implementation="eager")
    flash.config.get_text_config()._attn_implementation = "flex_attention"
    with pytest.raises(UnsupportedGenerationError, match="runs sdpa or eager attention; this model uses"):
        RolloutEngine(flash)
    with pytest.raises(UnsupportedGenerationError, match="merge_lora=True, but the model has no peft LoRA layers"):
        RolloutEngine(model, merge_lora=True)
    from videorft_hf.testing import build_tiny_text_lm

    with pytest.raises(UnsupportedGenerationError, match="generates with Qwen-VL models .* this model is 'qwen2'"):
        RolloutEngine(build_tiny_text_lm()[0])


@pytest.mark.parametrize("attn_implementation", ["eager"])
def test_eager_attention(media, attn_implementation):
    """The additive mask of eager attention: the same tokens as generate."""
    model, processor = tiny(attn_implementation=attn_implementation)
    ids, mask, visions = batch(model, processor, mixed_rows(media))
    config = greedy(processor, steps=12)
    reference = reference_generate(model, ids, mask, visions, config)
    out = RolloutEngine(model).rollout(ids, mask, visions, groups=blocks(ids), generation_config=config)
    assert torch.equal(out.sequences, reference.sequences)


# ---------------------------------------------------------------------------------------------- compiled
@pytest.mark.slow
def test_compiled_step_equals_eager(media):
    """torch.compile (inductor on CPU) gives the eager step's tokens; the compile time is reported per shape and
    later calls of the shape do not recompile."""
    model, processor = tiny()
    ids, mask, visions = batch(model, processor, mixed_rows(media))
    config = greedy(processor, steps=32)
    eager = RolloutEngine(model).rollout(ids, mask, visions, groups=blocks(ids), generation_config=config)
    engine = RolloutEngine(model, compile=True)
    compiled = engine.rollout(ids, mask, visions, groups=blocks(ids), generation_config=config)
    assert torch.equal(compiled.sequences, eager.sequences)
    assert list(engine.compile_seconds) == [(8, 256)] and engine.compile_seconds[(8, 256)] > 0
    again = engine.rollout(ids[:5], mask[:5], visions[:5], groups=blocks(ids[:5]), generation_config=config)
    assert torch.equal(again.sequences, eager.sequences[:5]) and len(engine.compile_seconds) == 1


@pytest.mark.slow
@pytest.mark.parametrize("merge_lora", [False, True])
def test_compiled_qlora_equals_generate(media, tiny_checkpoint, merge_lora):
    """Both QLoRA options through torch.compile: peft's adapters on bitsandbytes' 4-bit base (a) and the merged
    dense copies (b), computing in float32, give generate's greedy tokens."""
    model, processor = _qlora(tiny_checkpoint, torch.float32)
    ids, mask, visions = batch(model, processor, mixed_rows(media))
    config = greedy(processor, steps=16)
    reference = reference_generate(model, ids, mask, visions, config)
    out = RolloutEngine(model, merge_lora=merge_lora, compile=True).rollout(ids, mask, visions, groups=blocks(ids),
                                                                           generation_config=config)
    assert torch.equal(out.sequences, reference.sequences)
