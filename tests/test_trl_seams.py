"""Every private trl name this package touches, with the signature it expects.

trl's private methods and attributes change without notice between releases. This list is the one place that says
which of them `videorft_hf` relies on; on another trl version the test fails with a single message that names every
seam that changed. A second test greps `src/` so that a new private name cannot be used without being listed here,
and a third so that a name `src/` no longer uses does not stay listed: the lists are exactly the package's surface on
trl's internals. (`trainer.py` hands media between the seams through its own `GenerationMedia` object, never through
attributes of trl's; `vllm_media.patched` is the only code that changes trl's vLLM generation object.)
"""

import importlib
import inspect
import re
from pathlib import Path

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
                "transformers.core_model_loading:PrefixChange", "transformers.core_model_loading:dot_natural_key"]

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
