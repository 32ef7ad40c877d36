"""Drop-in: a trl GRPO script trains exactly the same with `VideoGRPOTrainer` in place of `GRPOTrainer`.

Each scenario builds a tiny model from a config (the same seed for both classes), trains one step with the stock
trainer and one with ours, and asserts equal logged metrics (loss, rewards, KL, entropy, clipping ...) and equal
parameter changes. Families beyond Qwen-VL get their real processor classes around a byte-level tokenizer and trl's
own chat template for the family, so nothing is downloaded.
"""

import inspect

import pytest
import torch
from datasets import Dataset
from PIL import Image
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode
from trl import GRPOConfig, GRPOTrainer
from trl.chat_template_utils import gemma3_chat_template, llava_next_chat_template, qwen3_chat_template

from videorft_hf.processing import UnsupportedVideoModelError
from videorft_hf.testing import build_tiny_tokenizer, build_tiny_vlm, write_test_video
from videorft_hf.trainer import VideoGRPOTrainer

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]
# Metrics that measure time, or that only this package logs (media decode counters).
UNCOMPARED = ("step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second", "media/")


# ------------------------------------------------------------------------------------------------ tiny models
def _byte_tokenizer(specials: list[str], extra_special_tokens: dict, chat_template: str, **tokens):
    """A byte-level BPE tokenizer (no merges): `specials` first, then the 256 bytes."""
    byte_to_char = bytes_to_unicode()
    vocab = {token: i for i, token in enumerate(specials)}
    vocab.update({byte_to_char[b]: len(specials) + b for b in range(256)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, extra_special_tokens=extra_special_tokens, **tokens)
    tokenizer.add_tokens([AddedToken(token, special=True, normalized=False) for token in specials], special_tokens=True)
    tokenizer.chat_template = chat_template
    return tokenizer


def _tiny_text_config(vocab_size: int, **extra) -> dict:
    """Two decoder layers of width 32: the text part of every tiny model here."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 512,
        **extra,
    }


def _seeded(build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


def tiny_gemma3():
    """`Gemma3ForConditionalGeneration` (SigLIP tower, 4 soft tokens per image) and a real `Gemma3Processor`."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    specials += ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    tokenizer = _byte_tokenizer(
        specials,
        {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"},
        gemma3_chat_template,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": 28, "width": 28}),
        tokenizer=tokenizer,
        chat_template=gemma3_chat_template,
        image_seq_length=4,
    )
    ids = tokenizer.convert_tokens_to_ids
    config = Gemma3Config(
        text_config=_tiny_text_config(
            len(tokenizer),
            head_dim=16,
            sliding_window=16,
            layer_types=["sliding_attention", "full_attention"],  # the completion must see the image
        ),
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 7,
        },
        mm_tokens_per_image=4,
        image_token_id=ids("<image_soft_token>"),
        boi_token_id=ids("<start_of_image>"),
        eoi_token_id=ids("<end_of_image>"),
        eos_token_id=[ids("<eos>"), ids("<end_of_turn>")],
        pad_token_id=ids("<pad>"),
        bos_token_id=ids("<bos>"),
    )

    def build():
        model = Gemma3ForConditionalGeneration(config)
        # Initialised to zeros, the projection would cut the vision tower off from every gradient.
        torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight, std=0.5)
        return model

    return _seeded(build), processor


def tiny_llava_next():
    """`LlavaNextForConditionalGeneration` (CLIP tower, any-resolution tiles) and a real `LlavaNextProcessor`."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tokenizer = _byte_tokenizer(
        ["<pad>", "</s>", "<s>", "<unk>", "<image>"],
        {"image_token": "<image>"},
        llava_next_chat_template,
        pad_token="<pad>",
        eos_token="</s>",
        bos_token="<s>",
        unk_token="<unk>",
    )
    pinpoints = [[28, 28], [28, 56], [56, 28]]
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessor(
            size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}, image_grid_pinpoints=pinpoints
        ),
        tokenizer=tokenizer,
        chat_template=llava_next_chat_template,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    config = LlavaNextConfig(
        text_config=_tiny_text_config(len(tokenizer), model_type="llama"),
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
            "projection_dim": 32,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    return _seeded(lambda: LlavaNextForConditionalGeneration(config)), processor


def tiny_text_lm():
    """A text-only `Qwen3ForCausalLM` with trl's Qwen3 chat template (it renders tools)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = build_tiny_tokenizer("qwen2_vl")
    tokenizer.chat_template = qwen3_chat_template
    config = Qwen3Config(
        **_tiny_text_config(
            len(tokenizer) + 16,
            head_dim=16,
            max_position_embeddings=1024,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    return _seeded(lambda: Qwen3ForCausalLM(config)), tokenizer


def tiny_qwen3_5(moe: bool = False):
    """`Qwen3_5ForConditionalGeneration` (or its MoE variant): one linear-attention (gated delta rule) and one full
    attention layer, with the Qwen3-VL processor and vision tower sizes of `videorft_hf.testing`."""
    from transformers import (
        Qwen3_5Config,
        Qwen3_5ForConditionalGeneration,
        Qwen3_5MoeConfig,
        Qwen3_5MoeForConditionalGeneration,
    )

    model, processor = build_tiny_vlm("qwen3_vl", seed=0)
    base = model.config
    text = base.text_config.to_dict()
    text = {
        key: text[key]
        for key in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "max_position_embeddings", "rope_parameters", "bos_token_id",
            "eos_token_id", "pad_token_id",
        )
    }
    text.update(
        linear_key_head_dim=16,
        linear_value_head_dim=16,
        linear_num_key_heads=2,
        linear_num_value_heads=2,
        layer_types=["linear_attention", "full_attention"],
    )
    if moe:
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32)
    vision = base.vision_config.to_dict()
    vision = {
        key: vision[key]
        for key in (
            "depth", "hidden_size", "intermediate_size", "num_heads", "patch_size", "spatial_merge_size",
            "temporal_patch_size", "out_hidden_size", "num_position_embeddings",
        )
    }
    config_class, model_class = (
        (Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration) if moe else (Qwen3_5Config, Qwen3_5ForConditionalGeneration)
    )
    config = config_class(
        text_config=text,
        vision_config=vision,
        image_token_id=base.image_token_id,
        video_token_id=base.video_token_id,
        vision_start_token_id=base.vision_start_token_id,
        vision_end_token_id=base.vision_end_token_id,
    )
    return _seeded(lambda: model_class(config)), processor


BUILDERS = {
    "qwen3_5": tiny_qwen3_5,
    "qwen3_5_moe": lambda: tiny_qwen3_5(moe=True),
    "qwen2_vl": lambda: build_tiny_vlm("qwen2_vl", seed=0),
    "qwen2_5_vl": lambda: build_tiny_vlm("qwen2_5_vl", seed=0),
    "qwen3_vl": lambda: build_tiny_vlm("qwen3_vl", seed=0),
    "gemma3": tiny_gemma3,
    "llava_next": tiny_llava_next,
    "text": tiny_text_lm,
}


# ------------------------------------------------------------------------------------------------ datasets
def image(i: int, size=(40, 30)) -> Image.Image:
    return Image.new("RGB", size, COLOURS[i % len(COLOURS)])


def string_prompt_rows():
    """trl's standard VLM format: a plain-string conversational prompt and an `image` column."""
    return [{"prompt": [{"role": "user", "content": f"What colour is picture {i}?"}], "image": image(i)} for i in range(4)]


def structured_prompt_rows():
    """An `{"type": "image"}` block in the prompt and the image in the `image` column."""
    content = [{"type": "image"}, {"type": "text", "text": "Describe it."}]
    return [{"prompt": [{"role": "user", "content": content}], "image": image(i)} for i in range(4)]


def multi_image_rows():
    """Two images per row in an `images` column, plain-string prompt."""
    return [
        {"prompt": [{"role": "user", "content": f"Compare the pictures ({i})."}], "images": [image(i), image(i + 1)]}
        for i in range(4)
    ]


def text_rows():
    return [{"prompt": [{"role": "user", "content": f"Count to {i}."}]} for i in range(4)]


def length_reward(completions, **kwargs):
    return [float(len(c[0]["content"])) for c in completions]


# ------------------------------------------------------------------------------------------------ harness
def train_once(cls, family, rows, tmp_path, reward_funcs=(length_reward,), trainer_kwargs=None, **overrides):
    # The model goes in as a path, as in a trl script: trl loads it (and the reference model, when beta > 0) itself.
    model, processing_class = BUILDERS[family]()
    model_dir = tmp_path / f"{family}-model"
    if not model_dir.exists():
        model.save_pretrained(model_dir)
    values = dict(
        output_dir=str(tmp_path / cls.__name__),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=4,
        max_steps=1,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        bf16=False,
        logging_steps=1,
        save_strategy="no",
        seed=0,
    )
    values.update(overrides)
    trainer = cls(
        str(model_dir),
        reward_funcs=list(reward_funcs) if reward_funcs is not None else None,
        args=GRPOConfig(**values),
        train_dataset=Dataset.from_list(rows),
        processing_class=processing_class,
        **((trainer_kwargs() if callable(trainer_kwargs) else trainer_kwargs) or {}),
    )
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    deltas = {name: after[name].detach() - p for name, p in before.items()}
    logs = [
        {k: v for k, v in entry.items() if not k.startswith(UNCOMPARED)} for entry in trainer.state.log_history
    ]
    return logs, deltas


def assert_same_training(family, rows, tmp_path, **kwargs):
    stock_logs, stock_deltas = train_once(GRPOTrainer, family, rows, tmp_path, **kwargs)
    ours_logs, ours_deltas = train_once(VideoGRPOTrainer, family, rows, tmp_path, **kwargs)
    assert "loss" in stock_logs[0] and len(stock_logs) == len(ours_logs)
    for stock, ours in zip(stock_logs, ours_logs, strict=True):
        assert ours.keys() == stock.keys()
        for key in stock:
            assert ours[key] == pytest.approx(stock[key], rel=1e-6, abs=1e-9, nan_ok=True), key
    moved = [name for name, delta in stock_deltas.items() if delta.abs().max() > 0]
    assert moved, "the stock trainer changed no parameter: the scenario proves nothing"
    assert ours_deltas.keys() == stock_deltas.keys()
    for name, delta in stock_deltas.items():
        torch.testing.assert_close(ours_deltas[name], delta, rtol=1e-5, atol=1e-7, msg=name)
    return stock_deltas


# ------------------------------------------------------------------------------------------------ scenarios
def test_constructor_signature_is_grpo_trainers():
    ours = inspect.signature(VideoGRPOTrainer.__init__).parameters
    stock = inspect.signature(GRPOTrainer.__init__).parameters
    assert [(p.name, p.kind, p.default) for p in ours.values()] == [
        (p.name, p.kind, p.default) for p in stock.values()
    ]


@pytest.mark.parametrize(
    "family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_5_moe", "gemma3", "llava_next"]
)
def test_string_prompt_with_image_column(tmp_path, family):
    deltas = assert_same_training(family, string_prompt_rows(), tmp_path)
    vision = [n for n, d in deltas.items() if d.abs().max() > 0 and ("visual" in n or "vision" in n)]
    assert vision, "no vision weight moved: the image did not reach the model"


def test_text_model_text_dataset(tmp_path):
    assert_same_training("text", text_rows(), tmp_path)


@pytest.mark.slow
def test_vlm_text_dataset(tmp_path):
    assert_same_training("qwen2_5_vl", text_rows(), tmp_path)


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param(structured_prompt_rows, id="structured_prompt", marks=pytest.mark.slow),
        pytest.param(multi_image_rows, id="multi_image"),
    ],
)
def test_image_formats(tmp_path, rows):
    assert_same_training("qwen2_5_vl", rows(), tmp_path)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"beta": 0.1}, id="beta"),
        pytest.param({"num_iterations": 2, "max_steps": 2}, id="importance_sampling"),
        pytest.param({"pad_to_multiple_of": 8}, id="pad_to_multiple_of"),
        pytest.param({"log_completions": True, "log_multimodal": False}, id="log_multimodal_off"),
        pytest.param({"log_completions": True}, id="log_completions"),
        pytest.param({"loss_type": "grpo", "scale_rewards": "batch"}, id="grpo_loss"),
    ],
)
@pytest.mark.slow
def test_config_options(tmp_path, overrides):
    assert_same_training("qwen2_5_vl", string_prompt_rows(), tmp_path, **overrides)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gemma3", "llava_next", "qwen3_vl"])
@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"beta": 0.1}, id="beta"),
        pytest.param({"num_iterations": 2, "max_steps": 2}, id="importance_sampling"),
        pytest.param({"pad_to_multiple_of": 8}, id="pad_to_multiple_of"),
    ],
)
def test_config_options_other_families(tmp_path, family, overrides):
    assert_same_training(family, string_prompt_rows(), tmp_path, **overrides)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_5_vl", "gemma3"])
def test_peft(tmp_path, family):
    from peft import LoraConfig

    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    deltas = assert_same_training(
        family, string_prompt_rows(), tmp_path, trainer_kwargs={"peft_config": peft_config}, beta=0.1
    )
    assert all("lora_" in name for name in deltas)


@pytest.mark.slow
def test_tools(tmp_path):
    def multiply(a: int, b: int) -> int:
        """Multiplies two integers.

        Args:
            a: The first integer.
            b: The second integer.
        """
        return a * b

    assert_same_training("text", text_rows(), tmp_path, trainer_kwargs={"tools": [multiply]})


@pytest.mark.slow
def test_image_paths_are_decoded_with_the_sampling_rules(tmp_path):
    """Deliberately different from trl: an image *path* is decoded by this package with the run's image pixel
    bounds; training then equals the stock trainer given those decoded images."""
    from videorft_hf.video import VideoSamplingConfig, load_image

    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"picture{i}.png"))
        image(i, size=(300, 200)).save(paths[-1])
    path_rows = [{**row, "image": path} for row, path in zip(string_prompt_rows(), paths, strict=True)]
    decoded_rows = [{**row, "image": load_image(path, VideoSamplingConfig())} for row, path in zip(path_rows, paths, strict=True)]
    assert decoded_rows[0]["image"].size != (300, 200)  # the default pixel bounds resize it
    stock_logs, stock_deltas = train_once(GRPOTrainer, "qwen2_5_vl", decoded_rows, tmp_path)
    ours_logs, ours_deltas = train_once(VideoGRPOTrainer, "qwen2_5_vl", path_rows, tmp_path)
    assert ours_logs[0]["loss"] == stock_logs[0]["loss"] and ours_logs[0]["entropy"] == stock_logs[0]["entropy"]
    for name, delta in stock_deltas.items():
        torch.testing.assert_close(ours_deltas[name], delta, rtol=1e-5, atol=1e-7, msg=name)


def numbered_environments():
    """An environment factory whose environments own the reward: each scores its rollouts by its own number's
    parity, so that the two completions of a prompt (two environments) get different rewards."""
    numbers = iter(range(1000))

    class NumberedEnvironment:
        def __init__(self):
            self.number = next(numbers)

        def reset(self, **kwargs) -> str:
            return " Use the counter if you like."

        def increment(self, step: int) -> str:
            """Adds to the counter.

            Args:
                step: How much to add.
            """
            return str(step + 1)

        def get_reward(self) -> float:
            return float(self.number % 2)

    return NumberedEnvironment


def test_environment_owned_reward(tmp_path, monkeypatch):
    """`reward_funcs=None`: the environment's `get_reward` is the only reward."""
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    assert_same_training(
        "text",
        text_rows(),
        tmp_path,
        reward_funcs=None,
        trainer_kwargs=lambda: {"environment_factory": numbered_environments()},
    )


def test_rewards_receive_frames(tmp_path):
    """`frames` is added to the reward keyword arguments: the image the policy saw, or None for a text row. A batch
    mixing image and text rows (which trl's image path cannot take) goes through this package's own media path."""
    seen = []

    def frames_reward(completions, frames, **kwargs):
        seen.append(frames)
        return [float(len(c[0]["content"])) for c in completions]

    def pixels():
        return {None if f is None else f.getpixel((0, 0)) for batch in seen for f in batch}

    rows = string_prompt_rows()
    rows[1]["image"] = None
    batch = {"per_device_train_batch_size": 8, "max_completion_length": 2}  # the four rows in one batch
    train_once(VideoGRPOTrainer, "qwen2_5_vl", rows, tmp_path, reward_funcs=[frames_reward], **batch)
    assert pixels() == {COLOURS[0], None, COLOURS[2], COLOURS[3]}
    seen.clear()
    train_once(VideoGRPOTrainer, "qwen2_5_vl", string_prompt_rows(), tmp_path, reward_funcs=[frames_reward], **batch)
    assert pixels() == set(COLOURS)


@pytest.mark.parametrize("family", ["gemma3", "llava_next"])
def test_video_rows_on_other_families_are_a_typed_error(tmp_path, family):
    video = write_test_video(tmp_path / "clip.mp4", num_frames=8, fps=4.0, width=56, height=56)
    rows = [
        {"prompt": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}],
         "video": str(video)}
    ] * 4
    with pytest.raises(UnsupportedVideoModelError, match=f"The dataset has video rows.*'{family}'"):
        train_once(VideoGRPOTrainer, family, rows, tmp_path)
    # A streamed dataset cannot be scanned by the constructor: its first batch with video fails the same way.
    model, processing_class = BUILDERS[family]()
    trainer = VideoGRPOTrainer(
        model,
        reward_funcs=[length_reward],
        args=GRPOConfig(
            output_dir=str(tmp_path / "streamed"), per_device_train_batch_size=4, num_generations=2, max_steps=1,
            max_completion_length=4, report_to=[], use_cpu=True, save_strategy="no",
        ),
        train_dataset=Dataset.from_list(rows).to_iterable_dataset(),
        processing_class=processing_class,
    )
    with pytest.raises(UnsupportedVideoModelError, match=f"The batch has video rows.*'{family}'"):
        trainer.train()
