"""Loading in `videorft_hf.modeling`: the SFT model as trl loads it, checkpoints for generation (vision-language or
text-only, an adapter merged in) and merged checkpoints written once."""

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForImageTextToText, PreTrainedTokenizerBase, ProcessorMixin
from trl import ModelConfig

from videorft_hf import modeling
from videorft_hf.modeling import (
    CHECKPOINT_DTYPE,
    load_model,
    load_model_and_processor,
    load_training_model,
    merge_adapter,
    torch_dtype,
)
from videorft_hf.testing import build_tiny_text_lm, save_tiny_vlm


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    return save_tiny_vlm("qwen2_5_vl", tmp_path_factory.mktemp("vlm") / "model")


@pytest.fixture(scope="module")
def adapter_dir(vlm_dir, tmp_path_factory):
    """A LoRA adapter with non-zero B (merging changes the weights) on the tiny VLM."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForImageTextToText.from_pretrained(vlm_dir),
        LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False),
    )
    path = tmp_path_factory.mktemp("lora") / "adapter"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    model, tokenizer = build_tiny_text_lm()
    path = tmp_path_factory.mktemp("text") / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _training_args(model_init_kwargs=None):
    distributed = SimpleNamespace(distributed_type="NO")
    return SimpleNamespace(trust_remote_code=False, distributed_state=distributed, model_init_kwargs=model_init_kwargs)


def test_torch_dtype_names():
    assert torch_dtype("bfloat16") is torch.bfloat16
    assert torch_dtype("auto") is (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    with pytest.raises(ValueError, match="Unknown dtype 'bf16'; use 'auto', 'bfloat16', 'float16' or 'float32'."):
        torch_dtype("bf16")


@pytest.mark.parametrize("dtype", ["bfloat16", "auto"])
def test_training_model_is_what_trl_loads(vlm_dir, dtype):
    from trl.trainer.utils import create_model_from_path

    model_args = ModelConfig(model_name_or_path=str(vlm_dir), dtype=dtype)
    model = load_training_model(model_args, _training_args())
    expected = create_model_from_path(
        str(vlm_dir), revision=model_args.model_revision, trust_remote_code=False, attn_implementation=None, dtype=dtype
    )
    assert type(model) is type(expected) and model.dtype == expected.dtype
    assert model.config.to_dict() == expected.config.to_dict()
    state, expected_state = model.state_dict(), expected.state_dict()
    assert state.keys() == expected_state.keys()
    assert all(torch.equal(state[name], expected_state[name]) for name in state)


def test_training_model_takes_model_init_kwargs_last_and_refuses_an_unknown_dtype(vlm_dir):
    model_args = ModelConfig(model_name_or_path=str(vlm_dir), dtype="float32")
    model = load_training_model(model_args, _training_args(model_init_kwargs={"dtype": "bfloat16"}))
    assert model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="Invalid `dtype` passed to the config"):
        load_training_model(ModelConfig(model_name_or_path=str(vlm_dir), dtype="int8"), _training_args())


def test_generation_loading_picks_the_model_class_and_processor(vlm_dir, text_dir):
    model, processor = load_model_and_processor(str(vlm_dir), dtype="float32", device="cpu")
    assert isinstance(processor, ProcessorMixin) and type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert not model.training and model.dtype == torch.float32
    model, tokenizer = load_model_and_processor(str(text_dir), dtype="bfloat16", device="cpu")
    assert isinstance(tokenizer, PreTrainedTokenizerBase) and type(model).__name__ == "Qwen2ForCausalLM"
    assert model.dtype == torch.bfloat16


def test_merge_adapter_writes_the_merged_checkpoint_once(vlm_dir, adapter_dir, tmp_path, monkeypatch):
    expected = load_model(str(vlm_dir), str(adapter_dir), dtype="float32", device="cpu")
    out = merge_adapter(str(vlm_dir), adapter_dir, tmp_path / "merged", dtype=CHECKPOINT_DTYPE)
    merged = AutoModelForImageTextToText.from_pretrained(out)
    assert merged.dtype == torch.float32  # CHECKPOINT_DTYPE: the base checkpoint's dtype
    for name, tensor in expected.state_dict().items():
        torch.testing.assert_close(merged.state_dict()[name], tensor)
    assert (tmp_path / "merged" / "processor_config.json").is_file() and (tmp_path / "merged" / "merged.json").is_file()

    def fail(*args, **kwargs):
        raise AssertionError("a finished merge is reused, not redone")

    monkeypatch.setattr(modeling, "load_model", fail)
    monkeypatch.setattr(modeling, "load_model_and_processor", fail)
    assert merge_adapter(str(vlm_dir), adapter_dir, tmp_path / "merged") == str(tmp_path / "merged")


def test_merge_adapter_in_a_dtype_without_the_processor(vlm_dir, adapter_dir, tmp_path):
    out = merge_adapter(str(vlm_dir), adapter_dir, tmp_path / "bf16", dtype="bfloat16", save_processor=False)
    assert AutoModelForImageTextToText.from_pretrained(out, dtype="auto").dtype == torch.bfloat16  # as saved
    assert not (tmp_path / "bf16" / "processor_config.json").exists()
