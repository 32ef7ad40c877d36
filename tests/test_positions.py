"""M-RoPE positions: every forward and generation the package drives places tokens by Qwen's rule (REFERENCE.md
section 4), whatever the installed transformers does.

The rule is written out here (`reference_row`: token by token, exact rational arithmetic) and every check compares
with it, never with transformers nor with `videorft_hf.positions`. Where a pass takes positions from the model, the
positions that reach its rotary embedding are captured with a forward hook.
"""

import copy
import inspect
import math
from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from transformers.video_utils import VideoMetadata
from trl.trainer.utils import add_fused_lm_head

from videorft_hf.internals import apply_position_rule, has_position_rule
from videorft_hf.positions import PositionRule, rope_index
from videorft_hf.processing import encode_prompt, mm_token_type_ids, render_prompt
from videorft_hf.prompt_sharing import generate_with_shared_prefill, generation_groups, shared_prompt_logps
from videorft_hf.testing import build_tiny_vlm, build_tiny_vlm_config, make_index_frames

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
FACTOR = {"qwen2_vl": 28, "qwen2_5_vl": 28, "qwen3_vl": 32}  # patch size x spatial merge
TEMPERATURE = 0.7


# --------------------------------------------------------------------------------------------- the rule, written out
def block_queues(config, image_grids=(), video_grids=(), seconds=None):
    """The vision blocks of a batch in order, per placeholder token: `(t, h, w, seconds per grid or None)` with the
    processor's (unmerged) grids; a Qwen3-VL video is one block per frame."""
    videos = []
    for index, (t, h, w) in enumerate(torch.as_tensor(video_grids).reshape(-1, 3).tolist()):
        if config.model_type == "qwen3_vl":
            videos += [(1, h, w, None)] * t
        else:
            videos.append((t, h, w, None if seconds is None else float(torch.as_tensor(seconds).flatten()[index])))
    images = [(t, h, w, None) for t, h, w in torch.as_tensor(image_grids).reshape(-1, 3).tolist()]
    return {config.image_token_id: iter(images), config.video_token_id: iter(videos)}


def reference_row(tokens, config, queues):
    """Qwen's rule for one row of real tokens: a `(temporal, height, width)` triple per token, and the position the
    first decoded token takes (the largest position + 1)."""
    merge = config.vision_config.spatial_merge_size
    out, next_position, i = [], 0, 0
    while i < len(tokens):
        token = tokens[i]
        if token not in queues:
            out.append((next_position,) * 3)
            next_position += 1
            i += 1
            continue
        t, h, w, second = next(queues[token])
        start, block = next_position, []
        for a in range(t):
            if token == config.video_token_id and config.model_type == "qwen2_5_vl":
                per_second = Fraction(config.vision_config.tokens_per_second)
                offset = math.floor(a * Fraction(1.0 if second is None else second) * per_second)
            else:
                offset = a
            for b in range(h // merge):
                for c in range(w // merge):
                    block.append((start + offset, start + b, start + c))
        assert tokens[i : i + len(block)] == [token] * len(block), "the test's grids do not match its tokens"
        out += block
        i += len(block)
        next_position = max(max(p) for p in block) + 1
    return out, next_position


def reference_batch(input_ids, mask, config, **grids):
    """Per row, the rule's positions of its real tokens and its first decode position."""
    queues = block_queues(config, **grids)
    rows = []
    for row in range(input_ids.size(0)):
        real = mask[row].bool()
        rows.append(reference_row(input_ids[row][real].tolist(), config, queues))
    return rows


def assert_rule(positions, input_ids, mask, config, **grids):
    """`positions` `(3, rows, width)` hold the rule's positions at every real token; returns the first decode
    position of each row."""
    expected = reference_batch(input_ids, mask, config, **grids)
    for row, (triples, _) in enumerate(expected):
        real = mask[row].bool()
        assert positions[:, row, real].T.tolist() == [list(p) for p in triples], f"row {row}"
    return [first for _, first in expected]


def reference_position_ids(input_ids, mask, config, **grids):
    """The rule's positions `(3, rows, width)` (padding 0), built from `reference_row`."""
    out = torch.zeros(3, *input_ids.shape, dtype=torch.long)
    for row, (triples, _) in enumerate(reference_batch(input_ids, mask, config, **grids)):
        out[:, row, mask[row].bool()] = torch.tensor(triples, dtype=torch.long).T
    return out


# --------------------------------------------------------------------------------------------- the pure rule
def layout_tokens(config, layout):
    """Token ids and grids of a prompt described as `("text", n)`, `("image", (t, h, w))` and
    `("video", (t, h, w), seconds per grid)` items (unmerged grids); a Qwen3-VL video gets its timestamp text (3
    tokens) before each frame, as its processor writes it."""
    merge = config.vision_config.spatial_merge_size
    ids, images, videos, seconds = [], [], [], []
    for item in layout:
        if item[0] == "text":
            ids += [5 + k % 7 for k in range(item[1])]
            continue
        t, h, w = item[1]
        tokens = (h // merge) * (w // merge)
        if item[0] == "image":
            ids += [config.image_token_id] * t * tokens
            images.append(item[1])
            continue
        videos.append(item[1])
        seconds.append(item[2])
        if config.model_type == "qwen3_vl":
            for _ in range(t):
                ids += [9, 10, 11] + [config.video_token_id] * tokens
        else:
            ids += [config.video_token_id] * t * tokens
    return ids, images, videos, seconds


TWO_THIRDS = float(torch.tensor(2 / 3, dtype=torch.float32))  # what the processor's float32 tensor holds
LAYOUTS = {
    # 16 frames of a 30 s clip: 3.75 s per temporal grid, temporal extent 52 >> spatial 1.
    "fractional, temporal longer": [("text", 4), ("video", (8, 4, 4), 3.75), ("text", 6)],
    # Sampled at 8 fps: 0.25 s per grid (truncated to 0 s by transformers 5.0-5.17), temporal extent 5 > spatial 1.
    "fractional below one": [("text", 3), ("video", (12, 4, 4), 0.25), ("text", 2)],
    "fractional, float32": [("text", 2), ("video", (5, 4, 4), TWO_THIRDS), ("text", 3)],
    "integer": [("text", 2), ("video", (4, 6, 4), 2.0), ("text", 3)],
    "temporal shorter": [("text", 2), ("video", (2, 12, 16), 0.5), ("text", 5)],
    "several videos and images": [
        ("text", 3), ("image", (1, 8, 4)), ("text", 2), ("video", (4, 4, 4), 1.5), ("text", 1),
        ("video", (2, 10, 6), 0.5), ("text", 2), ("image", (1, 4, 12)), ("text", 4),
    ],
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("padded_deltas", [False, True])
def test_rule_on_a_left_padded_batch(family, padded_deltas):
    """Every layout above, in one left-padded batch with a text-only row: positions and decoding deltas."""
    config = build_tiny_vlm_config(family)
    rows = [layout_tokens(config, layout) for layout in LAYOUTS.values()]
    rows.append(([5, 6, 7], [], [], []))  # text only
    width = max(len(ids) for ids, *_ in rows)
    input_ids = torch.tensor([[0] * (width - len(ids)) + ids for ids, *_ in rows])
    mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids, *_ in rows])
    grids = {
        "image_grid_thw": torch.tensor([g for _, images, *_ in rows for g in images]),
        "video_grid_thw": torch.tensor([g for *_, videos, _ in rows for g in videos]),
        "second_per_grid_ts": torch.tensor([s for *_, seconds in rows for s in seconds], dtype=torch.float32),
    }
    positions, deltas = rope_index(
        PositionRule.from_config(config), input_ids, mask, deltas_from_padded_length=padded_deltas, **grids
    )
    first = assert_rule(positions, input_ids, mask, config, image_grids=grids["image_grid_thw"],
                        video_grids=grids["video_grid_thw"], seconds=grids["second_per_grid_ts"])
    assert (positions[:, mask == 0] == 0).all()
    counts = torch.full((len(rows),), width) if padded_deltas else mask.sum(1)
    assert deltas[:, 0].tolist() == [f - int(n) for f, n in zip(first, counts, strict=True)]
    if family == "qwen2_5_vl":  # the fractional layouts do reach past the spatial extent, as intended
        assert first[0] == 4 + 52 + 1 + 6 and first[1] == 3 + 5 + 1 + 2


def test_the_issues_example_16_frames_of_a_30_second_clip():
    """16 frames sampled from a 30 s clip: 3.75 s per temporal grid at 2 tokens per second, video_grid_thw
    8 x 36 x 64 (merged 8 x 18 x 32). The temporal positions run to start + 52, so the first text token after the
    video is at start + 53."""
    model, _ = build_tiny_vlm("qwen2_5_vl")
    config = model.config
    start = 4
    ids = [5] * start + [config.video_token_id] * (8 * 18 * 32) + [6, 7]
    input_ids = torch.tensor([ids])
    grids = {"video_grid_thw": torch.tensor([[8, 36, 64]]), "second_per_grid_ts": torch.tensor([30 / 16 * 2])}
    assert grids["second_per_grid_ts"].item() == 3.75 and config.vision_config.tokens_per_second == 2
    (triples, first), = reference_batch(input_ids, torch.ones_like(input_ids), config, video_grids=grids["video_grid_thw"],
                                        seconds=grids["second_per_grid_ts"])
    video = triples[start : start + 8 * 18 * 32]
    assert max(p[0] for p in video) == start + 52 and triples[-2] == (start + 53,) * 3 and first == start + 55

    positions, deltas = rope_index(PositionRule.from_config(config), input_ids, **grids)
    assert positions[:, 0, -2].tolist() == [start + 53] * 3 and deltas.item() == start + 55 - len(ids)
    types = mm_token_type_ids(input_ids, config.image_token_id, config.video_token_id)
    stock, _ = model.model.get_rope_index(input_ids, types, **grids)  # what the installed transformers does
    apply_position_rule(model)
    patched, _ = model.model.get_rope_index(input_ids, types, **grids)
    assert patched[:, 0, -2].tolist() == [start + 53] * 3
    print(f"first text token after the video: transformers gives start + {int(stock[0, 0, -2]) - start}, the rule 53")


@pytest.mark.parametrize("padded_deltas", [False, True])
def test_replacement_takes_the_calls_of_every_transformers_5_signature(monkeypatch, padded_deltas):
    """transformers 5.0-5.2 call `get_rope_index(input_ids, image_grid_thw, video_grid_thw, second_per_grid_ts,
    attention_mask)` (no `mm_token_type_ids`); 5.3+ pass `mm_token_type_ids` second. The replacement reads the
    parameter order off the class's own method, and its deltas follow the installed version's decoding."""
    import videorft_hf.internals as internals

    monkeypatch.setattr(internals, "deltas_from_padded_length", lambda: padded_deltas)
    config = build_tiny_vlm_config("qwen2_5_vl")
    ids, _, videos, seconds = layout_tokens(config, LAYOUTS["fractional, temporal longer"])
    input_ids = torch.tensor([[0, 0] + ids])
    mask = torch.tensor([[0, 0] + [1] * len(ids)])
    grid, per_grid = torch.tensor(videos), torch.tensor(seconds)
    (_, first), = reference_batch(input_ids, mask, config, video_grids=grid, seconds=per_grid)
    expected_delta = first - (input_ids.size(1) if padded_deltas else len(ids))

    def old_signature(self, input_ids=None, image_grid_thw=None, video_grid_thw=None, second_per_grid_ts=None,
                      attention_mask=None):
        raise AssertionError("the rule replaces this method")

    def new_signature(self, input_ids, mm_token_type_ids, image_grid_thw=None, video_grid_thw=None,
                      second_per_grid_ts=None, attention_mask=None, **kwargs):
        raise AssertionError("the rule replaces this method")

    model, _ = build_tiny_vlm("qwen2_5_vl")
    old_model, _ = build_tiny_vlm("qwen2_5_vl")
    installed = type(model.model)
    model.model.__class__ = type("Qwen2_5_VLModelOf5_3", (installed,), {"get_rope_index": new_signature})
    old_model.model.__class__ = type("Qwen2_5_VLModelOf5_0", (installed,), {"get_rope_index": old_signature})
    for m in (model, old_model):
        apply_position_rule(m)
    calls = [
        old_model.model.get_rope_index(input_ids, None, grid, per_grid, mask),
        old_model.model.get_rope_index(input_ids, video_grid_thw=grid, second_per_grid_ts=per_grid, attention_mask=mask),
        model.model.get_rope_index(input_ids, mm_token_type_ids(input_ids, None, config.video_token_id), None, grid,
                                   per_grid, mask),
        model.model.get_rope_index(input_ids, video_grid_thw=grid, second_per_grid_ts=per_grid, attention_mask=mask,
                                   pixel_values=None, use_cache=True),  # generation passes its model kwargs
    ]
    for positions, deltas in calls:
        assert_rule(positions, input_ids, mask, config, video_grids=grid, seconds=per_grid)
        assert deltas.tolist() == [[expected_delta]]


# --------------------------------------------------------------------------------------------- through the models
def clip(n, seconds, size):
    """`n` frames sampled evenly from an 8 fps clip of `seconds`, with their metadata (sampled fps n / seconds)."""
    total = round(seconds * 8)
    indices = [round(i * (total - 1) / (n - 1)) for i in range(n)]
    metadata = VideoMetadata(total_num_frames=total, fps=8.0, frames_indices=indices, width=size, height=size)
    return make_index_frames(n, size, size), metadata


def prompt(processor, parts):
    """`(ids, vision)` of a user turn holding `parts` ("question text", ("video", (frames, metadata)), ("image", im))."""
    content, videos, images = [], [], []
    for part in parts:
        if isinstance(part, str):
            content.append({"type": "text", "text": part})
        else:
            content.append({"type": part[0]})
            (videos if part[0] == "video" else images).append(part[1])
    text = render_prompt(processor, [{"role": "user", "content": content}])
    return encode_prompt(processor, text, videos, images)


def two_prompts(family, processor):
    """A long clip (16 frames of 30 s: temporal extent 52, spatial 2) and an image + a short clip whose spatial
    extent (4) exceeds its temporal one (2)."""
    f = FACTOR[family]
    long = prompt(processor, [("video", clip(16, 30.0, 2 * f)), "What happens in this clip?"])
    short = prompt(processor, [("image", Image.new("RGB", (2 * f, 3 * f), (9, 90, 200))), "and",
                               ("video", clip(4, 2.0, 4 * f)), "Which one is blue?"])
    return [long, short]


def left_pad(prompts, pad):
    width = max(len(ids) for ids, _ in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p, _ in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p, _ in prompts])
    return ids, mask


def vision_batch(visions):
    keys = dict.fromkeys(k for v in visions if v for k in v)
    return {key: torch.cat([v[key] for v in visions if v and key in v]) for key in keys}


def grid_kwargs(vision):
    return {"image_grids": vision.get("image_grid_thw", ()), "video_grids": vision.get("video_grid_thw", ()),
            "seconds": vision.get("second_per_grid_ts")}


class CapturedPositions:
    """The `position_ids` that reach the language model's rotary embedding, call by call."""

    def __init__(self, model):
        self.calls = []
        rotary = model.model.language_model.rotary_emb
        self.handle = rotary.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        positions = (args[1] if len(args) > 1 else kwargs["position_ids"]).detach().clone()
        if positions.dim() == 2:  # one row for all three components, as the rotary embedding reads it
            positions = positions[None]
        self.calls.append(positions.expand(3, -1, -1))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def reference_logps(model, input_ids, mask, vision, temperature=1.0, suppressed=()):
    """Log-softmax of every position's logits from one forward over the real tokens at the rule's positions (written
    out by this test), row by row; `suppressed` tokens' logits lowered by 100 (as a GRPO rollout suppresses them)."""
    config = model.config
    outputs = []
    for row in range(input_ids.size(0)):
        real = mask[row].bool()
        ids = input_ids[row][real][None]
        positions = reference_position_ids(ids, torch.ones_like(ids), config, **grid_kwargs(vision[row] or {}))
        extra = dict(vision[row] or {})
        if extra and "mm_token_type_ids" in inspect.signature(type(model.model).forward).parameters:
            extra["mm_token_type_ids"] = mm_token_type_ids(ids, config.image_token_id, config.video_token_id)
        with torch.no_grad():
            logits = model(input_ids=ids, position_ids=positions, **extra).logits[0].float()
        logits[:, list(suppressed)] -= 100
        outputs.append(torch.log_softmax(logits / temperature, dim=-1))
    return outputs


@pytest.mark.parametrize(("family", "dtype"), [(f, torch.float32) for f in FAMILIES] + [("qwen2_5_vl", torch.bfloat16)])
def test_forward_and_generate_place_every_token_by_the_rule(family, dtype):
    """A left-padded batch of two prompts: the positions reaching the rotary embedding in a forward, in
    `generate`'s prefill and in each of its decode steps are the rule's, and `generate`'s log-probs (its output
    logits) equal those of one forward over prompt + completion at the rule's positions (fp32: 1e-4; bf16: 0.05)."""
    model, processor = build_tiny_vlm(family, dtype=dtype)
    apply_position_rule(model)
    prompts = two_prompts(family, processor)
    input_ids, mask = left_pad(prompts, processor.tokenizer.pad_token_id)
    vision = vision_batch([v for _, v in prompts])
    inputs = dict(vision)
    if "mm_token_type_ids" in inspect.signature(type(model.model).forward).parameters:  # transformers >= 5.3
        inputs["mm_token_type_ids"] = mm_token_type_ids(input_ids, model.config.image_token_id,
                                                        model.config.video_token_id)
    for key in ("pixel_values", "pixel_values_videos"):
        inputs[key] = inputs[key].to(dtype)
    with CapturedPositions(model) as seen, torch.no_grad():
        model(input_ids=input_ids, attention_mask=mask, **inputs)
        first = assert_rule(seen.calls[0], input_ids, mask, model.config, **grid_kwargs(vision))
        seen.calls.clear()
        steps = 4
        out = model.generate(input_ids=input_ids, attention_mask=mask, **inputs, max_new_tokens=steps,
                             min_new_tokens=steps, do_sample=False, output_logits=True, return_dict_in_generate=True)
    assert_rule(seen.calls[0], input_ids, mask, model.config, **grid_kwargs(vision))
    assert len(seen.calls) == steps
    for step, positions in enumerate(seen.calls[1:], start=1):
        assert positions.shape[-1] == 1
        assert positions[:, :, 0].T.tolist() == [[f + step - 1] * 3 for f in first]

    full_mask = torch.cat([mask, torch.ones(mask.size(0), steps, dtype=mask.dtype)], dim=1)
    expected = reference_logps(model, out.sequences, full_mask, [v for _, v in prompts])
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    for row, logps in enumerate(expected):
        length = int(mask[row].sum())
        for step, scores in enumerate(out.logits):  # raw logits (scores hide min_new_tokens' end token)
            got = torch.log_softmax(scores[row].float(), dim=-1)
            torch.testing.assert_close(got, logps[length - 1 + step], atol=tolerance, rtol=0)


def grpo_batch(processor, prompts, generations=2, seed=0):
    """trl's layout: each prompt `generations` times with random completions; left-padded prompts, right-padded
    completions; per-row vision (rows of one prompt share one dict)."""
    rng = torch.Generator().manual_seed(seed)
    pad = processor.tokenizer.pad_token_id
    rows = []
    for ids, vision in prompts:
        for _ in range(generations):
            completion = torch.randint(0, 250, (int(torch.randint(2, 7, (1,), generator=rng)),), generator=rng)
            rows.append((ids, completion.tolist(), vision))
    width, keep = max(len(p) for p, _, _ in rows), max(len(c) for _, c, _ in rows)
    ids = torch.tensor([[pad] * (width - len(p)) + p + c + [pad] * (keep - len(c)) for p, c, _ in rows])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * (len(p) + len(c)) + [0] * (keep - len(c)) for p, c, _ in rows])
    return ids, mask, keep, [v for *_, v in rows]


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_and_per_row_log_prob_passes_follow_the_rule(family):
    """`shared_prompt_logps`, shared and per row, on a model without the installed rule: each completion token's
    log-prob equals a forward over its row at the rule's positions (1e-4, fp32)."""
    plain, processor = build_tiny_vlm(family)
    fused, _ = build_tiny_vlm(family)
    add_fused_lm_head(fused, temperature=TEMPERATURE, outputs=("log_probs", "entropy"))
    input_ids, mask, keep, visions = grpo_batch(processor, two_prompts(family, processor))
    expected = reference_logps(plain, input_ids, mask, visions, TEMPERATURE)
    width = input_ids.size(1) - keep
    for share in (True, False):
        with torch.no_grad():
            result = shared_prompt_logps(fused, input_ids, mask, keep, visions, share=share,
                                         groups=generation_groups(input_ids.size(0), 2))
        assert result.stats.shared is share, result.stats.reason
        for row, logps in enumerate(expected):
            start = int(mask[row, :width].sum())  # real prompt tokens: the completion's first is scored at start - 1
            n = int(mask[row, width:].sum())
            targets = input_ids[row, width : width + n]
            want = logps[start - 1 : start - 1 + n].gather(1, targets[:, None])[:, 0]
            torch.testing.assert_close(result.logps[row, :n], want, atol=1e-4, rtol=0)
    assert not has_position_rule(fused)  # these passes take the rule's positions directly


def test_shared_prefill_generation_continues_by_the_rule():
    """`generate_with_shared_prefill` (each prompt prefilled once, G rows continued from its cache): decode steps
    sit at the rule's positions and the scores equal a forward over prompt + completion at the rule's positions."""
    model, processor = build_tiny_vlm("qwen2_5_vl")
    prompts = two_prompts("qwen2_5_vl", processor)
    rows = [p for p in prompts for _ in range(2)]
    input_ids, mask = left_pad(rows, processor.tokenizer.pad_token_id)
    visions = [v for _, v in rows]
    steps = 3
    with CapturedPositions(model) as seen:
        out = generate_with_shared_prefill(model, input_ids, mask, visions, groups=generation_groups(len(rows), 2),
                                           max_new_tokens=steps,
                                           min_new_tokens=steps, do_sample=False, output_logits=True,
                                           return_dict_in_generate=True)
    first = [f for _, f in reference_batch(input_ids, mask, model.config, **grid_kwargs(vision_batch(visions)))]
    # calls: the prefill of the unique prompts but their last token, then generate's steps from the cache
    assert [positions[:, :, 0].T.tolist() for positions in seen.calls[1:]] == [
        [[f - 1 + step] * 3 for f in first] for step in range(steps)
    ]
    full_mask = torch.cat([mask, torch.ones(mask.size(0), steps, dtype=mask.dtype)], dim=1)
    expected = reference_logps(model, out.sequences, full_mask, visions)
    for row, logps in enumerate(expected):
        length = int(mask[row].sum())
        for step, scores in enumerate(out.logits):
            torch.testing.assert_close(torch.log_softmax(scores[row], -1), logps[length - 1 + step], atol=1e-4, rtol=0)
    assert has_position_rule(model)


# --------------------------------------------------------------------------------------------- lifetime of the patch
def test_the_rule_survives_peft_ddp_deepcopy_and_saving(tmp_path):
    import torch.distributed as dist
    from peft import LoraConfig, get_peft_model

    from videorft_hf.modeling import load_model

    model, processor = build_tiny_vlm("qwen2_5_vl")
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert apply_position_rule(model) is model and has_position_rule(model)
    apply_position_rule(model)  # idempotent
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)

    twin = copy.deepcopy(model)
    assert has_position_rule(twin) and twin.model.get_rope_index.__self__ is twin.model

    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    loaded = load_model(str(tmp_path / "saved"), dtype="float32", device="cpu")
    assert has_position_rule(loaded)
    assert all(torch.equal(loaded.state_dict()[k], before[k]) for k in before)
    fresh, _ = build_tiny_vlm("qwen2_5_vl")
    assert not has_position_rule(fresh)  # other instances of the class are untouched

    peft_model = get_peft_model(twin, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert has_position_rule(peft_model)
    assert has_position_rule(peft_model.merge_and_unload())
    wrapped_later = get_peft_model(fresh, LoraConfig(r=2, target_modules=["q_proj"]))
    assert has_position_rule(apply_position_rule(wrapped_later)) and has_position_rule(fresh)

    started = not dist.is_initialized()
    if started:
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        other, _ = build_tiny_vlm("qwen2_5_vl")
        ddp = torch.nn.parallel.DistributedDataParallel(other)
        assert has_position_rule(apply_position_rule(ddp)) and has_position_rule(other)
    finally:
        if started:
            dist.destroy_process_group()


def test_every_transformers_backend_of_the_package_applies_the_rule(tmp_path):
    """SFT's loader, evaluation's generator, curation's backend and the generation loader install the rule; an SFT
    batch from the collator (right padding, a long clip and an image row) then reaches the model's rotary embedding
    at the rule's positions."""
    from trl import ModelConfig

    from videorft_hf.collators import DataCollatorForVideoLanguageModeling
    from videorft_hf.curation.backends import TransformersChatBackend
    from videorft_hf.evaluation import TransformersGenerator
    from videorft_hf.modeling import load_model, load_training_model
    from videorft_hf.testing import save_tiny_vlm, write_test_image, write_test_video
    from videorft_hf.video import VideoSamplingConfig

    path = str(save_tiny_vlm("qwen2_5_vl", tmp_path / "model"))
    assert has_position_rule(load_model(path, dtype="float32", device="cpu"))
    assert has_position_rule(TransformersGenerator(*build_tiny_vlm("qwen2_5_vl")).model)
    assert has_position_rule(TransformersChatBackend(*build_tiny_vlm("qwen2_5_vl")).model)
    training_args = SimpleNamespace(trust_remote_code=False, distributed_state=SimpleNamespace(distributed_type="NO"),
                                    model_init_kwargs=None)
    model = load_training_model(ModelConfig(model_name_or_path=path, dtype="float32"), training_args)
    assert has_position_rule(model)

    video = write_test_video(tmp_path / "long.mp4", num_frames=240, fps=8, width=56, height=56)  # 30 s
    image = write_test_image(tmp_path / "still.png", width=56, height=112, index=1)
    _, processor = build_tiny_vlm("qwen2_5_vl")
    sampling = VideoSamplingConfig(min_frames=16, max_frames=16, min_pixels=4 * 784, max_pixels=4 * 784)
    collator = DataCollatorForVideoLanguageModeling(processor, sampling_config=sampling)

    def row(kind, media, question):
        return {"prompt": [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": question}]}],
                "completion": [{"role": "assistant", "content": [{"type": "text", "text": "<answer>B</answer>"}]}],
                kind: str(media), "video" if kind == "image" else "image": None}

    batch = collator([row("video", video, "What happens?"), row("image", image, "Colour?")])
    assert batch["second_per_grid_ts"].tolist() == [3.75]
    with CapturedPositions(model) as seen, torch.no_grad():
        model(**batch)
    first = assert_rule(seen.calls[0], batch["input_ids"], batch["attention_mask"], model.config,
                        **grid_kwargs(batch))
    # 32 video tokens span 53 positions (temporal 0..52): the text after the video moved 21 positions on
    assert first[0] - int(batch["attention_mask"][0].sum()) == 53 - 32


def test_grpo_trainer_policy_and_reference_passes_follow_the_rule(tmp_path):
    """`VideoGRPOTrainer` with a KL term (trl loads a separate reference model): both models carry the rule, and the
    policy's and the reference's log-probs of a 30 s clip's completion equal a forward at the rule's positions."""
    from datasets import Dataset

    from videorft_hf.configs import VideoGRPOConfig
    from videorft_hf.testing import save_tiny_vlm, write_test_video
    from videorft_hf.trainer import VideoGRPOTrainer

    path = str(save_tiny_vlm("qwen2_5_vl", tmp_path / "model"))
    video = str(write_test_video(tmp_path / "long.mp4", num_frames=240, fps=8, width=56, height=56))
    rows = [{"prompt": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}],
             "video": video, "image": None}]
    args = VideoGRPOConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, num_generations=2, max_completion_length=4,
        max_steps=1, report_to=[], use_cpu=True, bf16=False, save_strategy="no", beta=0.04,
        video_sampling_preset="video-r1-train", video_min_pixels=4 * 784, video_max_pixels=4 * 784,
    )
    trainer = VideoGRPOTrainer(path, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)], args=args,
                               train_dataset=Dataset.from_list(rows))
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model
    assert has_position_rule(trainer.model) and has_position_rule(trainer.ref_model)
    processor = trainer.processing_class
    with trainer.generation_batch(rows) as batch, torch.no_grad():
        (ids,), _, _ = trainer._tokenize_prompts([rows[0]["prompt"]])
        vision = batch.vision[0]
        assert vision["second_per_grid_ts"].tolist() == [3.75]
        completion = processor.tokenizer("<answer>B</answer>", add_special_tokens=False)["input_ids"]
        input_ids = torch.tensor([ids + completion])
        mask = torch.ones_like(input_ids)
        for model in (trainer.model, trainer.ref_model):
            model.eval()
            logps, _, _ = trainer._get_per_token_logps_and_entropies(model, input_ids, mask, len(completion))
            # a media batch's passes score what its rollouts sample from: the placeholders suppressed
            placeholders = (model.config.image_token_id, model.config.video_token_id)
            expected = reference_logps(model, input_ids, mask, [vision], trainer.temperature, placeholders)[0]
            want = expected[len(ids) - 1 : -1].gather(1, torch.tensor(completion)[:, None])[:, 0]
            torch.testing.assert_close(logps[0], want, atol=1e-4, rtol=0)


def test_transformers_qwen3_vl_positions_already_follow_the_rule():
    """Qwen3-VL splits a video into one t = 1 block per frame, timestamps between them, so no temporal position
    reaches past the spatial ones: transformers' own `get_rope_index` (not replaced here) gives the rule's
    positions and decoding deltas, and the rule changes nothing for this family."""
    model, processor = build_tiny_vlm("qwen3_vl")
    prompts = two_prompts("qwen3_vl", processor)
    input_ids, mask = left_pad(prompts, processor.tokenizer.pad_token_id)
    vision = vision_batch([v for _, v in prompts])
    grids = {key: vision[key] for key in ("image_grid_thw", "video_grid_thw")}
    parameters = inspect.signature(type(model.model).get_rope_index).parameters
    if "mm_token_type_ids" in parameters:  # transformers >= 5.3
        grids["mm_token_type_ids"] = mm_token_type_ids(input_ids, model.config.image_token_id,
                                                       model.config.video_token_id)
    positions, deltas = model.model.get_rope_index(input_ids, attention_mask=mask, **grids)
    first = assert_rule(positions, input_ids, mask, model.config, **grid_kwargs(vision))
    if "mm_token_type_ids" in parameters:  # 5.0-5.2 count deltas from the padded length (see the README)
        assert deltas[:, 0].tolist() == [f - int(n) for f, n in zip(first, mask.sum(1), strict=True)]
