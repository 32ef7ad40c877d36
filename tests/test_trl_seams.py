"""Every private trl name this package touches, with the signature it expects.

trl's private methods and attributes change without notice between releases. This list is the one place that says
which of them `videorft_hf` relies on; on another trl version the test fails with a single message that names every
seam that changed. A second test greps `src/` so that a new private name cannot be used without being listed here,
and a third so that a name `src/` no longer uses does not stay listed: the lists are exactly the package's surface on
trl's internals. (`trainer.py` hands media between the seams through its own `GenerationMedia` object, never through
attributes of trl's; `vllm_media.patched` is the only code that changes trl's vLLM generation object.) The rollout
engine's internals of transformers, torch, peft and bitsandbytes are listed at the end (`ENGINE_INTERNALS`), and a
test keeps them inside `rollout.py`'s marked section.
"""

import importlib
import inspect
import re
from pathlib import Path

import pytest
import trl

SRC = Path(__file__).resolve().parents[1] / "src" / "videorft_hf"

# Private methods: "module:Class.method" (or "module:function") -> parameter names, with defaults as written by
# `inspect` (`name=default`). `videorft_hf` overrides or calls each one.
METHODS = {
    # trainer.py overrides these seams of GRPOTrainer and calls trl's own implementation through super().
    "trl:GRPOTrainer._generate_and_score_completions": ["self", "inputs"],
    "trl:GRPOTrainer._tokenize_prompts": ["self", "prompts"],
    "trl:GRPOTrainer._generate_single_turn": [
        "self", "prompt_ids", "images", "multimodal_fields", "num_generations", "has_tool_images=False"
    ],
    "trl:GRPOTrainer._get_per_token_logps_and_entropies": [
        "self", "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size=None", "compute_entropy=False",
        "compute_aux_loss=False", "pixel_values=None", "image_grid_thw=None", "num_images=None",
        "pixel_attention_mask=None", "spatial_shapes=None", "num_tiles=None", "image_sizes=None",
        "token_type_ids=None", "mm_token_type_ids=None", "image_position_ids=None",
    ],
    "trl:GRPOTrainer._compute_loss": ["self", "model", "inputs"],
    "trl:GRPOTrainer._prepare_inputs": ["self", "generation_batch"],
    # trainer._shuffle_keeping_groups replaces it in trl's grpo_trainer module while `_prepare_inputs` runs.
    "trl.trainer.grpo_trainer:shuffle_sequence_dict": ["seq_dict"],
    "trl:GRPOTrainer._calculate_rewards": ["self", "inputs", "prompts", "completions", "completion_ids_list"],
    "trl:GRPOTrainer._set_signature_columns_if_needed": ["self"],
    # vllm_media.patched (vLLM server mode) replaces it on the generation object with vllm_media.place_features.
    "trl.generation.vllm_generation:VLLMGeneration._place_features": ["self", "features", "prompt_ids"],
    # prompt_sharing.py calls the models as trl's log-prob passes do (`labels=..., fused_lm_head=True`, returning
    # `log_probs` and `entropy`): the contract of the head this function adds to GRPOTrainer's models.
    "trl.trainer.utils:add_fused_lm_head": [
        "model", "temperature=1.0", "cast_lm_head_to_fp32=False", "outputs=('log_probs',)"
    ],
    # checkpoints.ResumeExactly overrides these Trainer methods and calls transformers' own through super(): the full
    # and adapter weight loads of a resume and of load_best_model_at_end, and the epoch loop (no step at or past
    # max_steps).
    "transformers:Trainer._load_from_checkpoint": ["self", "resume_from_checkpoint", "model=None"],
    "transformers:Trainer._load_best_model": ["self"],
    "transformers:Trainer._run_epoch": [
        "self", "model", "epoch", "train_dataloader", "steps_in_epoch", "num_update_steps_per_epoch", "trial",
        "ignore_keys_for_eval", "start_time", "resume_from_checkpoint", "epochs_trained",
        "steps_trained_in_current_epoch",
    ],
    # checkpoints.weights_in_model_names applies a model's checkpoint conversion as from_pretrained does (the inverse
    # of what save_pretrained's revert_weight_conversion writes), with the conversions it reads from the model's
    # `_weight_conversions` (SOURCE_NAMES) or its default mapping.
    "transformers.core_model_loading:rename_source_key": [
        "source_key", "weight_renamings", "weight_converters", "base_model_prefix=None", "meta_state_dict=None",
        "reverse=False",
    ],
    "transformers.conversion_mapping:get_model_conversion_mapping": [
        "model", "key_mapping=None", "hf_quantizer=None", "add_legacy=True"
    ],
    "transformers.core_model_loading:WeightTransform.add_tensor": [
        "self", "target_key", "source_key", "source_pattern", "future"
    ],
    "transformers.core_model_loading:WeightConverter.convert": [
        "self", "layer_name", "model=None", "config=None", "hf_quantizer=None", "loading_info=None"
    ],
    "transformers.core_model_loading:WeightRenaming.convert": [
        "self", "layer_name", "model=None", "config=None", "hf_quantizer=None", "loading_info=None"
    ],
    # internals.biased_log_probs replaces it in trl.trainer.utils while a media batch's log-prob passes run, passing
    # the suppressed placeholders' logit bias as `bias` (the third argument of `apply`).
    "trl.trainer.utils:_ChunkedLogProbFunction.forward": [
        "ctx", "hidden", "weight", "bias", "targets", "temperature", "chunk_size", "final_logit_softcapping=None",
        "logit_scale=1.0", "outputs=('entropy', 'log_sum_sq_probs', 'mean_logits', 'is_top1')",
    ],
    # Not called: modeling.load_training_model mirrors it (tests/test_modeling.py compares the two models), so a
    # change of its signature is the sign to re-check that mirror.
    "trl.trainer.utils:create_model_from_path": ["model_id", "architecture=None", "kwargs"],
}

# Attributes read or written: "module:Class.attribute" -> where trl sets it (an instance attribute's assignment is
# found in the class source; a class attribute must exist on the class). Private ones, and the public attributes of
# trl's vLLM generation object that `vllm_media.patched` swaps for a media batch and restores.
ATTRIBUTES = {
    "trl:GRPOTrainer._is_vlm": "instance",  # trainer.py: media handling only for processors
    "trl:GRPOTrainer._metrics": "instance",  # trainer.py: media/* and temporal/* metrics
    "trl:GRPOTrainer._tag_names": "class",  # cards.py and trainer.py: model card and Hub tags
    "trl:SFTTrainer._tag_names": "class",  # cards.py: the SFT script's tags
    "transformers:Trainer._signature_columns": "instance",  # trainer.py: the `video` column survives
    "trl.generation.vllm_generation:VLLMGeneration.mode": "instance",  # vllm_media.patched: colocate or server
    "trl.generation.vllm_generation:VLLMGeneration.llm": "instance",  # wrapped in MultimodalLLM (colocate)
    "trl.generation.vllm_generation:VLLMGeneration.vllm_client": "instance",  # wrapped in MultimodalClient (server)
    "trl.generation.vllm_generation:VLLMGeneration.generation_kwargs": "instance",  # logit_bias on vision tokens
}

# Private module-level names imported (type aliases of the constructor signature, for annotations only).
MODULE_NAMES = ["trl.trainer.grpo_trainer:RewardFunc", "trl.trainer.grpo_trainer:RolloutFunc",
                "trl.trainer.grpo_trainer:EnvironmentFactory",
                "trl.trainer.utils:add_fused_lm_head",  # prompt_sharing.py (annotations; see METHODS)
                "trl.trainer:grpo_trainer",  # the module whose row shuffle trainer.py swaps (see METHODS)
                # checkpoints.py: the transform classes and key order of transformers' weight conversion.
                "transformers.core_model_loading:WeightConverter", "transformers.core_model_loading:WeightRenaming",
                "transformers.core_model_loading:PrefixChange", "transformers.core_model_loading:dot_natural_key",
                "trl.trainer:utils"]  # the module whose fused log-prob function internals.py swaps (see METHODS)

# Private names read by src/ that are set inside a library module rather than by a class: module -> names that must
# still appear in its source. `_weight_conversions`: the conversions `from_pretrained` used, which save_pretrained
# reverts (checkpoints._conversions reads it).
SOURCE_NAMES = {"transformers.core_model_loading": ["_weight_conversions"]}


def _resolve(spec: str):
    module_name, _, path = spec.partition(":")
    obj = importlib.import_module(module_name)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _parameters(func) -> list[str]:
    return [
        p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
        for p in inspect.signature(func).parameters.values()
    ]


def _seam_changes() -> list[str]:
    changes = []
    for spec, expected in METHODS.items():
        try:
            found = _parameters(_resolve(spec))
        except (ImportError, AttributeError) as error:
            changes.append(f"{spec}: gone ({error})")
            continue
        if found != expected:
            changes.append(f"{spec}: expected ({', '.join(expected)}), found ({', '.join(found)})")
    for spec, kind in ATTRIBUTES.items():
        cls_spec, _, attribute = spec.rpartition(".")
        try:
            cls = _resolve(cls_spec)
        except (ImportError, AttributeError) as error:
            changes.append(f"{spec}: class gone ({error})")
            continue
        if kind == "class":
            present = attribute in vars(cls)
        else:
            present = any(
                re.search(rf"self\.{attribute}\b\s*(:[^=]+)?=", inspect.getsource(klass))
                for klass in cls.__mro__
                if klass.__module__.startswith(("trl", "transformers"))
            )
        if not present:
            changes.append(f"{spec}: no longer set as {'a class' if kind == 'class' else 'an instance'} attribute")
    for spec in MODULE_NAMES:
        try:
            _resolve(spec)
        except (ImportError, AttributeError) as error:
            changes.append(f"{spec}: gone ({error})")
    for module_name, names in SOURCE_NAMES.items():
        source = inspect.getsource(importlib.import_module(module_name))
        changes += [f"{module_name}: no longer mentions {name}" for name in names if not re.search(rf"\b{name}\b", source)]
    return changes


def test_private_trl_seams_are_as_expected():
    changes = _seam_changes()
    assert not changes, (
        f"trl {trl.__version__} changed {len(changes)} private name(s) that videorft_hf relies on (written for trl "
        "1.16.0); review these seams in videorft_hf before using this trl version:\n  - " + "\n  - ".join(changes)
    )


def test_every_private_trl_name_used_in_src_is_listed():
    """`super()._x` calls, private attributes of trl objects and imports from private trl modules in src/ are all
    in the lists above."""
    listed_methods = {spec.rpartition(".")[2] for spec in METHODS}
    listed_attributes = {spec.rpartition(".")[2] for spec in ATTRIBUTES}
    listed_imports = {spec.partition(":")[0] for spec in MODULE_NAMES}
    unlisted = set()
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        unlisted |= {f"{path.name}: super().{m}" for m in re.findall(r"super\(\)\.(_[a-z]\w*)", text)} - {
            f"{path.name}: super().{m}" for m in listed_methods
        }
        for name in re.findall(r"\b(?:generation|trainer)\.(_[a-z]\w*)", text):
            if name not in listed_methods | listed_attributes:
                unlisted.add(f"{path.name}: .{name}")
        for module in re.findall(r"from (trl\.[\w.]+) import", text):
            if module not in listed_imports:
                unlisted.add(f"{path.name}: from {module} import")
    # Names of trl's trainers used through `self` in trainer.py (overridden, called or read).
    from transformers import Trainer
    from trl import GRPOTrainer

    trainer_source = (SRC / "trainer.py").read_text(encoding="utf-8")
    used = set(re.findall(r"self\.(_[a-z]\w*)", trainer_source)) | set(re.findall(r"def (_[a-z]\w*)", trainer_source))
    trl_names = {name for klass in (GRPOTrainer, Trainer) for name in vars(klass)}
    for klass in (GRPOTrainer, Trainer):
        trl_names |= set(re.findall(r"self\.(_[a-z]\w*)", inspect.getsource(klass)))
    unlisted |= {f"trainer.py: self.{name}" for name in (used & trl_names) - listed_methods - listed_attributes}
    assert not unlisted, f"private trl names used in src/ but not listed in tests/test_trl_seams.py: {sorted(unlisted)}"



def test_every_listed_name_is_used_in_src():
    """No stale entry: each listed method, import and attribute is still used somewhere in src/ (by name; a public
    attribute as `.name`)."""
    text = "\n".join(path.read_text(encoding="utf-8") for path in SRC.rglob("*.py"))
    patterns = {spec: rf"\b{spec.partition(':')[2].rpartition('.')[2]}\b" for spec in [*METHODS, *MODULE_NAMES]}
    patterns |= {f"{module}:{name}": rf"\b{name}\b" for module, names in SOURCE_NAMES.items() for name in names}
    for spec in ATTRIBUTES:
        name = spec.rpartition(".")[2]
        patterns[spec] = rf"\b{name}\b" if name.startswith("_") else rf"\.{name}\b"
    unused = [spec for spec, pattern in patterns.items() if not re.search(pattern, text)]
    assert not unused, f"listed in tests/test_trl_seams.py but no longer used in src/: {unused}"


# transformers internals, touched only by `videorft_hf/internals.py`: each inner Qwen-VL model's `get_rope_index` is
# replaced per instance by Qwen's M-RoPE rule (its forward calls it, and its `*ForConditionalGeneration` calls it
# through `self.model` when generation starts) and its `rope_deltas` is set for decoding from a prefilled cache.
ROPE_MODELS = [
    "transformers.models.qwen2_vl.modeling_qwen2_vl:Qwen2VLModel",
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLModel",
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLModel",
    "transformers.models.qwen3_vl_moe.modeling_qwen3_vl_moe:Qwen3VLMoeModel",
]
TRANSFORMERS_NAMES = ["get_rope_index", "rope_deltas"]


def test_transformers_internals_are_as_expected():
    """Each model's `get_rope_index` takes only parameters the replacement reads (by name, in the class's own order),
    `input_ids` first; the model sets `self.rope_deltas`, reads it when decoding and calls `self.get_rope_index`; its
    generation class calls `self.model.get_rope_index`."""
    import transformers

    from videorft_hf.internals import GET_ROPE_INDEX_PARAMETERS

    changes = []
    for spec in ROPE_MODELS:
        cls = _resolve(spec)
        parameters = list(inspect.signature(cls.get_rope_index).parameters)
        if parameters[:2] != ["self", "input_ids"] or not set(parameters) <= GET_ROPE_INDEX_PARAMETERS:
            changes.append(f"{spec}.get_rope_index: parameters ({', '.join(parameters)})")
        source = inspect.getsource(inspect.getmodule(cls))
        for needle in ("self.rope_deltas = ", "self.get_rope_index(", "self.model.get_rope_index(", "self.model.rope_deltas"):
            if needle not in source:
                changes.append(f"{spec}: its module no longer has {needle!r}")
    assert not changes, (
        f"transformers {transformers.__version__} changed the M-RoPE internals that videorft_hf.internals patches:"
        "\n  - " + "\n  - ".join(changes)
    )


def test_only_the_internals_module_touches_transformers_internals():
    offenders = [
        f"{path.relative_to(SRC)}: .{name}"
        for path in SRC.rglob("*.py")
        if path.name != "internals.py"
        for name in TRANSFORMERS_NAMES
        if re.search(rf"\.{name}\b", path.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"transformers internals used outside videorft_hf/internals.py: {offenders}"


# ---------------------------------------------------------------------------------------------- rollout engine
# Private and layout-dependent names of transformers, torch, peft and bitsandbytes that rollout.py uses, all in its
# marked section "Library internals" (the part that belongs to the package's fence module). "module:Class.name" ->
# how it is used: "call" (a callable, with the parameters listed when the signature matters), "instance" (an
# attribute assigned in the class's source), "class" (an attribute or property of the class), "field" (an output
# dataclass field).
ENGINE_INTERNALS = {
    # resolve_generation_config: the defaults generate fills unset fields with.
    "transformers:GenerationConfig._get_default_generation_params": ("call", []),
    # RolloutEngine refuses attention implementations that take no 4-D mask.
    "transformers:PreTrainedConfig._attn_implementation": ("class", None),
    # The prefill's DynamicCache, read layer by layer and copied into the static cache's rows.
    "transformers.cache_utils:Cache.layers": ("instance", None),
    "transformers.cache_utils:DynamicLayer.keys": ("instance", None),
    "transformers.cache_utils:DynamicLayer.values": ("instance", None),
    "transformers.modeling_outputs:BaseModelOutputWithPast.cache": ("field", None),
    # The decoder the step runs, per family.
    "transformers.models.qwen2_vl.modeling_qwen2_vl:Qwen2VLModel.language_model": ("instance", None),
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLModel.language_model": ("instance", None),
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLModel.language_model": ("instance", None),
    # The step's static buffers keep their addresses (CUDA graphs read them in place).
    "torch._dynamo:mark_static_address": ("call", None),
    # GenerationWeights keeps the shared 4-bit weights in their layout (see rollout._keep_quantized_layout).
    "bitsandbytes.nn:Linear4bit.support_avx512bf16_for_cpu": ("instance", None),
    # merge_lora: which peft LoRA layers `W0 + s * B @ A` reproduces.
    "peft.tuners.lora:LoraLayer.use_dora": ("instance", None),
    "peft.tuners.lora:LoraLayer.lora_bias": ("instance", None),
    "peft.tuners.lora:LoraLayer.merged_adapters": ("instance", None),
}


def _engine_internal_changes() -> list[str]:
    changes = []
    for spec, (kind, expected) in ENGINE_INTERNALS.items():
        owner_spec, _, name = spec.rpartition(".") if ":" in spec.rpartition(".")[0] else (spec, "", "")
        try:
            owner = _resolve(owner_spec)
        except (ImportError, AttributeError) as error:
            changes.append(f"{spec}: gone ({error})")
            continue
        if kind == "call":
            target = getattr(owner, name, None) if name else owner
            if not callable(target):
                changes.append(f"{spec}: not callable")
            elif expected is not None and _parameters(target) != expected:
                changes.append(f"{spec}: expected ({', '.join(expected)}), found ({', '.join(_parameters(target))})")
        elif kind == "class" and not any(name in vars(klass) for klass in owner.__mro__):
            changes.append(f"{spec}: no longer a class attribute")
        elif kind == "field" and name not in getattr(owner, "__dataclass_fields__", {}):
            changes.append(f"{spec}: no longer a field")
        elif kind == "instance" and not any(
            re.search(rf"self\.{name}\b\s*(:[^=]+)?=", inspect.getsource(klass))
            for klass in owner.__mro__
            if klass.__module__.split(".")[0] in ("transformers", "peft", "bitsandbytes", "torch")
        ):
            changes.append(f"{spec}: no longer set as an instance attribute")
    return changes


def test_rollout_engine_internals_are_as_expected():
    pytest.importorskip("bitsandbytes")
    changes = _engine_internal_changes()
    assert not changes, (
        f"{len(changes)} library internal(s) that videorft_hf.rollout relies on changed; review its 'Library "
        "internals' section:\n  - " + "\n  - ".join(changes)
    )


def test_rollout_engine_touches_library_internals_only_in_its_fence_section():
    """Outside the marked section, rollout.py reaches no private attribute (`x._name`) of another object, and every
    listed name appears inside the section."""
    text = (SRC / "rollout.py").read_text(encoding="utf-8")
    start = text.index("# Library internals.")
    end = text.index("# ====", text.index("\n", text.index("# ====", start) + 1) + 1)
    fence, outside = text[start:end], text[:start] + text[end:]
    private = sorted(set(re.findall(r"\b(?!self\.)\w+\.(_[a-z]\w*)", outside)))
    assert not private, f"private names used outside rollout.py's 'Library internals' section: {private}"
    missing = [spec for spec in ENGINE_INTERNALS if re.split(r"[.:]", spec)[-1] not in fence]
    assert not missing, f"listed in ENGINE_INTERNALS but not used in rollout.py's 'Library internals' section: {missing}"
