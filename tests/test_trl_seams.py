"""The package's surface on library internals, and the fence that keeps it in one module.

trl's and transformers' private methods and attributes (and the internals of torch, peft, bitsandbytes and
DeepSpeed the rollout engine and the fused log-prob head rely on) change without notice between releases. This file
is the one place that says which of them `videorft_hf` relies on:

- `SEAMS`: the methods of trl's and transformers' trainers that the package's trainer subclasses override (and call
  through `super()`), with their signatures;
- `INTERNALS`: every other private or internal library name, all of them used in `videorft_hf/internals.py` only,
  with what the code expects of each (a signature, an attribute its class sets, a module attribute, a field);
- `MIRRORED`: trl functions the package does not call but mirrors (a change of signature is the sign to re-check).

On another release the seam tests fail with one message naming every name that changed. The fence test scans the
source (its AST) and enforces the rule stated in `videorft_hf/internals.py`: outside that module, no module touches a
private library name, imports from an internal library module or patches a library object; the one exception is the
trainer subclasses overriding the listed `SEAMS` and calling them through `super()`. Two more tests keep the lists
exact: every private or internal name `internals.py` uses is listed, and every listed name is still used.

The checks hold over the supported transformers range (`pyproject.toml`); where releases differ, the entry says what
each release has (`make test-transformers-range` runs this file on the oldest and the newest release).
"""

import ast
import functools
import importlib
import inspect
import pkgutil
import re
import types
from pathlib import Path

import pytest
import trl

import videorft_hf

SRC = Path(__file__).resolve().parents[1] / "src" / "videorft_hf"
FENCE = SRC / "internals.py"

# ------------------------------------------------------------------------------------------------------- the lists
# "module:Class.method" -> parameter names, with defaults as `inspect` writes them. The package's trainer subclasses
# override each and call the library's own through super() (trainer.py: VideoGRPOTrainer; checkpoints.py:
# ResumeExactly, in VideoGRPOTrainer and VideoSFTTrainer).
SEAMS = {
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
    "trl:GRPOTrainer._calculate_rewards": ["self", "inputs", "prompts", "completions", "completion_ids_list"],
    "trl:GRPOTrainer._set_signature_columns_if_needed": ["self"],
    # The full and adapter weight loads of a resume and of load_best_model_at_end, and the epoch loop (no step at or
    # past max_steps).
    "transformers:Trainer._load_from_checkpoint": ["self", "resume_from_checkpoint", "model=None"],
    "transformers:Trainer._load_best_model": ["self"],
    "transformers:Trainer._run_epoch": [
        "self", "model", "epoch", "train_dataloader", "steps_in_epoch", "num_update_steps_per_epoch", "trial",
        "ignore_keys_for_eval", "start_time", "resume_from_checkpoint", "epochs_trained",
        "steps_trained_in_current_epoch",
    ],
}

# "module:name" or "module:Class.name" -> (kind, expected). Kinds: "call" (callable; `expected` its parameters, or the
# first ones with "call-prefix", or None), "instance" (assigned to `self.<name>` in the source of a library class of the
# MRO), "class" (an attribute of a class of the MRO), "field" (a dataclass field; `expected`: the names a release may
# use), "module" (exists), "optional" (exists in some releases of the range), "source" (named in the module's source).
INTERNALS = {
    # --- trl's GRPOTrainer (internals: is_vlm, log_metric, keep_signature_column, set_hub_tags, prompt_tools)
    "trl:GRPOTrainer._is_vlm": ("instance", None),  # media handling only for processors
    "trl:GRPOTrainer._metrics": ("instance", None),  # media/*, prompt_sharing/*, shaping/* and temporal/* metrics
    "transformers:Trainer._signature_columns": ("instance", None),  # the `video` column survives
    "trl:GRPOTrainer._tag_names": ("class", None),  # model card and Hub tags (the trainer class)
    "trl:SFTTrainer._tag_names": ("class", None),  # the SFT script's tags (its trainer instance)
    "trl:GRPOTrainer.create_model_card": ("call", None),  # replaced on the script's trainers (cards.record_run)
    "trl:GRPOTrainer.environment_factories": ("instance", None),  # prompt_tools: environments or plain tools
    "trl:GRPOTrainer._env_tools": ("instance", None),  # prompt_tools: each environment's tools
    "trl:GRPOTrainer._multi_environment": ("instance", None),  # prompt_tools: a dict of environment factories
    # call_reward_functions: trl's reward call for the T-GRPO shuffled rollouts, on this process's rows only (trl's
    # module-level `gather` made the identity) and out of the logs.
    "trl.trainer.grpo_trainer:gather": ("call", None),
    "trl:GRPOTrainer._log_completion_extra": ("call", ["self", "column", "values"]),
    "trl:GRPOTrainer._log_metric": ("call", ["self", "name", "value"]),
    "trl:GRPOTrainer.reward_processing_classes": ("instance", None),
    "trl:GRPOTrainer.environments": ("instance", None),
    # row_shuffle: trl's row shuffle of a generation batch, replaced while `_prepare_inputs` runs.
    "trl.trainer.grpo_trainer:shuffle_sequence_dict": ("call", ["seq_dict"]),
    "trl.trainer:grpo_trainer": ("module", None),
    # suppressed_tokens: the vision placeholders added to trl's suppressed tokens while a media batch generates.
    "trl:GRPOTrainer.generation_kwargs": ("instance", None),
    "trl:GRPOTrainer.generation_config": ("instance", None),
    # The annotations of trl's constructor, which VideoGRPOTrainer's signature repeats.
    "trl.trainer.grpo_trainer:RewardFunc": ("module", None),
    "trl.trainer.grpo_trainer:RolloutFunc": ("module", None),
    "trl.trainer.grpo_trainer:EnvironmentFactory": ("module", None),
    # --- trl's vLLM generation (vllm_generation_patched, for vllm_media.patched)
    "trl.generation.vllm_generation:VLLMGeneration._place_features": ("call", ["self", "features", "prompt_ids"]),
    "trl.generation.vllm_generation:VLLMGeneration.mode": ("instance", None),  # colocate or server
    "trl.generation.vllm_generation:VLLMGeneration.llm": ("instance", None),  # wrapped in MultimodalLLM
    "trl.generation.vllm_generation:VLLMGeneration.vllm_client": ("instance", None),  # wrapped in MultimodalClient
    "trl.generation.vllm_generation:VLLMGeneration.generation_kwargs": ("instance", None),  # logit_bias
    # --- trl's fused LM head (biased_log_probs adds the suppressed placeholders' bias as `bias`, the third argument
    # of `apply`; has_fused_lm_head: add_fused_lm_head replaces the instance's forward, and prompt_sharing calls the
    # model as trl's log-prob passes do, `labels=..., fused_lm_head=True`)
    "trl.trainer:utils": ("module", None),
    "trl.trainer.utils:_ChunkedLogProbFunction": ("call", None),
    "trl.trainer.utils:_ChunkedLogProbFunction.forward": ("call", [
        "ctx", "hidden", "weight", "bias", "targets", "temperature", "chunk_size", "final_logit_softcapping=None",
        "logit_scale=1.0", "outputs=('entropy', 'log_sum_sq_probs', 'mean_logits', 'is_top1')",
    ]),
    "transformers.integrations.deepspeed:is_deepspeed_zero3_enabled": ("call", []),
    "deepspeed.runtime.zero.partition_parameters:ZeroParamStatus": ("module", None),
    # --- transformers' weight conversion (exact resume: weight_conversions, weights_in_model_names, ignored_on_save)
    "transformers:PreTrainedModel._keys_to_ignore_on_save": ("class", None),
    "transformers.core_model_loading:_weight_conversions": ("source", None),  # what from_pretrained used
    "transformers:core_model_loading": ("module", None),
    "transformers.core_model_loading:PrefixChange": ("optional", None),  # transformers >= 5.25 (5.15-5.24: none)
    "transformers.conversion_mapping:get_model_conversion_mapping": ("call-prefix", ["model", "key_mapping=None"]),
    "transformers.core_model_loading:WeightConverter": ("call", None),
    "transformers.core_model_loading:WeightRenaming": ("call", None),
    "transformers.core_model_loading:dot_natural_key": ("call", None),
    # 5.15-5.24: base_model_prefix; 5.25: reverse=False
    "transformers.core_model_loading:rename_source_key": (
        "call-prefix", ["source_key", "weight_renamings", "weight_converters"]
    ),
    "transformers.core_model_loading:WeightTransform.add_tensor": (
        "call", ["self", "target_key", "source_key", "source_pattern", "future"]
    ),
    "transformers.core_model_loading:WeightConverter.convert": (
        "call-prefix", ["self", "layer_name", "model=None", "config=None"]
    ),
    "transformers.core_model_loading:WeightRenaming.convert": (
        "call-prefix", ["self", "layer_name", "model=None", "config=None"]
    ),
    "transformers.models.auto.modeling_auto:MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES": ("module", None),
    # --- transformers' KV caches and attention (prompt sharing and the rollout engine)
    "transformers:PreTrainedConfig._attn_implementation": ("class", None),
    "transformers.cache_utils:Cache.batch_select_indices": ("call", ["self", "indices"]),
    # the cache a forward returns: `cache` in 5.25, `past_key_values` in 5.15-5.24
    "transformers.modeling_outputs:BaseModelOutputWithPast.cache": ("field", ("cache", "past_key_values")),
    "transformers.cache_utils:Cache.layers": ("instance", None),
    "transformers.cache_utils:DynamicLayer.keys": ("instance", None),
    "transformers.cache_utils:DynamicLayer.values": ("instance", None),
    # --- the rollout engine
    "transformers:GenerationConfig._get_default_generation_params": ("call", []),
    "transformers.models.qwen2_vl.modeling_qwen2_vl:Qwen2VLModel.language_model": ("instance", None),
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl:Qwen2_5_VLModel.language_model": ("instance", None),
    "transformers.models.qwen3_vl.modeling_qwen3_vl:Qwen3VLModel.language_model": ("instance", None),
    "torch:_dynamo": ("module", None),
    "torch._dynamo:mark_static_address": ("call", None),
    "bitsandbytes.nn:Linear4bit.support_avx512bf16_for_cpu": ("instance", None),
    "peft.tuners.lora:LoraLayer": ("call", None),
    "peft.tuners.lora:LoraLayer.use_dora": ("instance", None),
    "peft.tuners.lora:LoraLayer.lora_bias": ("instance", None),
    "peft.tuners.lora:LoraLayer.merged_adapters": ("instance", None),
    "peft.utils.integrations:dequantize_bnb_weight": ("call", None),
}

# Not called, but relied on (a change of signature is the sign to re-check what the package built on it); each is
# named in the package's source.
MIRRORED = {
    # modeling.load_training_model mirrors it (tests/test_modeling.py compares the two models).
    "trl.trainer.utils:create_model_from_path": ["model_id", "architecture=None", "kwargs"],
    # GRPOTrainer adds this head to its models; prompt_sharing calls them as trl's log-prob passes do
    # (`labels=..., fused_lm_head=True`, returning `log_probs` and `entropy`), internals.has_fused_lm_head finds it.
    "trl.trainer.utils:add_fused_lm_head": [
        "model", "temperature=1.0", "cast_lm_head_to_fp32=False", "outputs=('log_probs',)"
    ],
}

# Libraries inside the fence, and their modules that are public (documented for users to import; torch's modules
# are public unless private by name). Any other module of trl, transformers, peft, bitsandbytes, accelerate,
# DeepSpeed or vLLM is an internal one.
FENCED = ("trl", "transformers", "torch", "peft", "bitsandbytes", "accelerate", "deepspeed", "vllm")
PUBLIC_MODULES = {
    "trl", "trl.extras.profiling",  # profiling_decorator / profiling_context: trl documents them for trainers
    "transformers", "transformers.trainer_utils", "transformers.trainer_callback", "transformers.video_utils",
    "transformers.utils", "transformers.generation",
    "transformers.convert_slow_tokenizer",  # bytes_to_unicode: the byte-level alphabet of the test kit's tokenizers
    "peft", "accelerate", "bitsandbytes", "deepspeed", "vllm",
}
# Private names of the standard library's argparse, which the command-line parser extends (not a fenced library).
STDLIB_PRIVATE = {
    "_ArgumentGroup", "_StoreFalseAction", "_group_actions", "_action_groups", "_get_formatter", "_metavar_formatter",
    "_expand_help",
}


# ------------------------------------------------------------------------------------------------------- resolving
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


def _library(klass) -> bool:
    return klass.__module__.split(".")[0] in FENCED


@functools.cache
def _set_in_source(klass) -> frozenset[str]:
    """Names a library class assigns as `self.<name> = ...` in its source."""
    try:
        source = inspect.getsource(klass)
    except (OSError, TypeError):
        return frozenset()
    return frozenset(re.findall(r"self\.(\w+)\s*(?::[^=\n]+)?=(?!=)", source))


def _owner_and_name(spec: str):
    module_name, _, path = spec.partition(":")
    owner, _, name = path.rpartition(".")
    return (f"{module_name}:{owner}" if owner else module_name), name


def _internal_changes() -> list[str]:
    changes = []
    for spec, expected in {**SEAMS, **MIRRORED}.items():
        try:
            found = _parameters(_resolve(spec))
        except (ImportError, AttributeError) as error:
            changes.append(f"{spec}: gone ({error})")
            continue
        if found != expected:
            changes.append(f"{spec}: expected ({', '.join(expected)}), found ({', '.join(found)})")
    for spec, (kind, expected) in INTERNALS.items():
        owner_spec, name = _owner_and_name(spec)
        try:
            owner = importlib.import_module(owner_spec) if ":" not in owner_spec else _resolve(owner_spec)
        except (ImportError, AttributeError) as error:
            changes.append(f"{spec}: gone ({error})")
            continue
        if kind == "source":
            if not re.search(rf"\b{name}\b", inspect.getsource(owner)):
                changes.append(f"{spec}: no longer in the module's source")
            continue
        if kind == "optional":
            continue
        if kind == "instance":
            classes = [k for k in owner.__mro__ if _library(k)]
            if not any(name in _set_in_source(k) for k in classes):
                changes.append(f"{spec}: no longer set as an instance attribute")
            continue
        if kind == "class":
            if not any(name in vars(k) for k in owner.__mro__):
                changes.append(f"{spec}: no longer a class attribute")
            continue
        if kind == "field":
            fields = getattr(owner, "__dataclass_fields__", {})
            if not set(expected) & set(fields):
                changes.append(f"{spec}: none of the fields {expected}")
            continue
        target = getattr(owner, name, None)
        if target is None:
            changes.append(f"{spec}: gone")
        elif kind in ("call", "call-prefix"):
            if not callable(target):
                changes.append(f"{spec}: not callable")
            elif expected is not None:
                found = _parameters(target)
                if (found if kind == "call" else found[: len(expected)]) != expected:
                    changes.append(f"{spec}: expected ({', '.join(expected)}), found ({', '.join(found)})")
    return changes


def test_library_internals_are_as_expected():
    pytest.importorskip("bitsandbytes")
    pytest.importorskip("deepspeed")
    import transformers

    changes = _internal_changes()
    assert not changes, (
        f"trl {trl.__version__} / transformers {transformers.__version__} changed {len(changes)} internal name(s) "
        "that videorft_hf relies on (videorft_hf/internals.py and the trainer seams); review them before using this "
        "release:\n  - " + "\n  - ".join(changes)
    )


# ---------------------------------------------------------------------------------------------------- the fence
def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(module: str, package: str, level: int, name: str | None = None) -> bool:
    """Whether an import binds a module: `import a.b`, or `from a import b` where `a.b` is a module."""
    if level:
        base = package.rsplit(".", level - 1)[0] if level > 1 else package
        module = f"{base}.{module}" if module else base
    full = f"{module}.{name}" if name else module
    try:
        return isinstance(importlib.import_module(full), types.ModuleType)
    except ImportError:
        return False


def _absolute(module: str | None, package: str, level: int) -> str:
    if not level:
        return module or ""
    base = package.rsplit(".", level - 1)[0] if level > 1 else package
    return f"{base}.{module}" if module else base


def _internal_module(module: str) -> bool:
    """A fenced library's module that is not public (see PUBLIC_MODULES)."""
    parts = module.split(".")
    if parts[0] not in FENCED:
        return False
    if any(part.startswith("_") and not part.startswith("__") for part in parts):
        return True
    return parts[0] != "torch" and module not in PUBLIC_MODULES


_BINDERS = ("types.MethodType", "MethodType", "functools.partial", "partial")  # calls that make a method of a function


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@functools.cache
def _package_modules() -> dict[str, types.ModuleType]:
    modules = {}
    for info in pkgutil.walk_packages(videorft_hf.__path__, "videorft_hf."):
        modules[info.name] = importlib.import_module(info.name)
    modules["videorft_hf"] = videorft_hf
    return modules


@functools.cache
def _package_classes() -> list[type]:
    classes = []
    for module in _package_modules().values():
        classes += [v for v in vars(module).values() if isinstance(v, type) and v.__module__ == module.__name__]
    return classes


@functools.cache
def _library_names(klass: type) -> frozenset[str]:
    """The names the fenced libraries define for instances of `klass`: attributes and methods of the library classes
    in the MRO of `klass` or of any package class derived from it (a mixin's methods override those too), and what
    their source assigns to `self`."""
    names = set()
    for cls in _package_classes():
        if klass in cls.__mro__:
            for k in cls.__mro__:
                if _library(k) and k is not object:
                    names |= set(vars(k)) | _set_in_source(k)
    return frozenset(names)


def _seam_names() -> set[str]:
    return {spec.rpartition(".")[2] for spec in SEAMS}


def _own_private_names(trees: dict[Path, ast.Module]) -> set[str]:
    """Private names the package defines outside the fence: functions, classes, module and class attributes,
    attributes it sets on `self`."""
    names = set()
    for path, tree in trees.items():
        if path == FENCE:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    names.add(node.attr)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return {name for name in names if _private(name)}


class _Fence(ast.NodeVisitor):
    """Finds the uses of library internals in one module outside the fence (see the module docstring's rule)."""

    def __init__(self, path: Path, own: set[str], package_classes: dict[str, type]):
        self.path = path
        self.where = path.relative_to(SRC)
        self.package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
        self.own = own
        self.package_classes = package_classes  # class name -> class, for the classes this package defines
        self.runtime = _package_modules().get(_module_name(path))
        self.findings: list[str] = []
        self.classes: list[type | None] = []
        self.scopes: list[dict] = [{"modules": set(), "functions": set(), "aliases": set(), "saved": {}}]

    def report(self, node, what: str) -> None:
        self.findings.append(f"{self.where}:{node.lineno}: {what}")

    # ------------------------------------------------------------------------------------- scopes
    def _library_names(self) -> frozenset[str]:
        klass = self.classes[-1] if self.classes else None
        return _library_names(klass) if klass is not None else frozenset()

    def _bound(self, key: str, name: str) -> bool:
        return any(name in scope[key] for scope in self.scopes)

    def visit_ClassDef(self, node):
        runtime = getattr(self.runtime, node.name, None) if len(self.scopes) == 1 else None
        self.classes.append(runtime if isinstance(runtime, type) else None)
        library = self._library_names()
        seams = _seam_names()
        for item in node.body:
            defined = [item.name] if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) else []
            if isinstance(item, (ast.Assign, ast.AnnAssign)):
                targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                defined = [t.id for t in targets if isinstance(t, ast.Name)]
            for name in defined:
                if _private(name) and name in library and name not in seams:
                    self.report(item, f"class {node.name} overrides the library's private {name} (not a listed seam)")
        self.scopes[-1]["functions"].add(node.name)
        self.generic_visit(node)
        self.classes.pop()

    def _visit_function(self, node):
        self.scopes[-1]["functions"].add(node.name)
        self.scopes.append({"modules": set(), "functions": set(), "aliases": set(), "saved": {}})
        self.generic_visit(node)
        self.scopes.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _visit_function

    # ------------------------------------------------------------------------------------- imports
    def visit_Import(self, node):
        for alias in node.names:
            if _internal_module(alias.name):
                self.report(node, f"imports the internal module {alias.name}")
            bound = alias.asname or alias.name.split(".")[0]
            self.scopes[-1]["modules"].add(bound)

    def visit_ImportFrom(self, node):
        module = _absolute(node.module, self.package, node.level)
        for alias in node.names:
            if _private(alias.name) and module.split(".")[0] in FENCED:
                self.report(node, f"imports the private {module}.{alias.name}")
            elif _internal_module(module):
                self.report(node, f"imports {alias.name} from the internal module {module}")
            elif _is_module(module, self.package, 0, alias.name) and _internal_module(f"{module}.{alias.name}"):
                self.report(node, f"imports the internal module {module}.{alias.name}")
            if _is_module(module, self.package, 0, alias.name):
                self.scopes[-1]["modules"].add(alias.asname or alias.name)

    # ------------------------------------------------------------------------------------- names
    def visit_Attribute(self, node):
        base = node.value
        name = node.attr
        is_self = isinstance(base, ast.Name) and base.id in ("self", "cls")
        is_super = isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super"
        if _private(name):
            if is_super:
                if name not in _seam_names():
                    self.report(node, f"super().{name}: not a listed seam")
            elif is_self:
                if name in self._library_names() and name not in _seam_names():
                    self.report(node, f"self.{name}: a private name of the library class it derives from")
            elif name not in self.own and name not in STDLIB_PRIVATE:
                self.report(node, f".{name}: a private name the package does not define")
            elif name in self.own and name in self._library_names():
                self.report(node, f".{name}: a private name the library class also defines")
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self._check_store(node)
        self.generic_visit(node)

    def _check_store(self, node):
        base = node.value
        if isinstance(base, ast.Name) and self._bound("modules", base.id):
            self.report(node, f"sets or deletes {base.id}.{node.attr}, an attribute of a module")
        if isinstance(node.ctx, ast.Del) and not (isinstance(base, ast.Name) and base.id in ("self", "cls")):
            self.report(node, f"deletes {ast.unparse(node)}")
        if self._library_held(base, aliases=False):
            self.report(node, f"sets {ast.unparse(node)}, an attribute of a library object the class holds")

    def _library_held(self, node, aliases: bool = True) -> bool:
        """`self.<name>` where a library base class sets `<name>` (or, with `aliases`, a local name bound to one)."""
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            return node.attr in self._library_names()
        return aliases and isinstance(node, ast.Name) and self._bound("aliases", node.id)

    def visit_Assign(self, node):
        for target in node.targets:
            if isinstance(target, ast.Attribute) and not (isinstance(target.value, ast.Name)
                                                           and target.value.id in ("self", "cls")):
                self._check_patch(node, target, node.value)
            if isinstance(target, ast.Subscript) and self._library_held(target.value):
                self.report(node, f"sets an item of {ast.unparse(target.value)}, a library object the class holds")
            if isinstance(target, ast.Name):
                if self._library_held(node.value):
                    self.scopes[-1]["aliases"].add(target.id)
                if isinstance(node.value, ast.Attribute):
                    self.scopes[-1]["saved"][target.id] = ast.unparse(node.value)
        self.generic_visit(node)

    def _check_patch(self, node, target, value):
        """A store that swaps behaviour into another object: a function, a wrapper of the package, or a value saved
        from the same attribute (the restore of a swap)."""
        base = target.value
        if isinstance(base, ast.Name) and self._bound("functions", base.id):
            return  # an attribute of the package's own function or class
        wrapper = (
            isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in self.package_classes
        )
        swapped = (
            isinstance(value, ast.Lambda)
            or (isinstance(value, ast.Name) and self._bound("functions", value.id))
            or (isinstance(value, ast.Call) and ast.unparse(value.func) in _BINDERS)
            or wrapper
            or (isinstance(value, ast.Name) and any(
                scope["saved"].get(value.id) == ast.unparse(target) for scope in self.scopes
            ))
        )
        if swapped:
            self.report(node, f"patches {ast.unparse(target)} = {ast.unparse(value)[:60]}")

    def visit_Call(self, node):
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr", "setattr", "delattr") and node.args:
            target = node.args[0]
            on_self = isinstance(target, ast.Name) and target.id in ("self", "cls")
            if func.id in ("setattr", "delattr") and not on_self:
                self.report(node, f"{func.id} on {ast.unparse(target)}")
            if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                name = node.args[1].value
                if _private(name) and (name not in self.own or (on_self and name in self._library_names())):
                    self.report(node, f"{func.id}(..., {name!r}): a private name the package does not define")
        if isinstance(func, ast.Name) and func.id == "vars" and node.args:
            target = node.args[0]
            if not (isinstance(target, ast.Name) and target.id in ("self", "cls")):
                self.report(node, f"vars({ast.unparse(target)}): reads another object's instance dictionary")
        self.generic_visit(node)


@functools.cache
def _trees() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in sorted(SRC.rglob("*.py"))}


def test_only_the_fence_touches_library_internals():
    """The rule of `videorft_hf/internals.py`, on every other module of the package."""
    trees = _trees()
    own = _own_private_names(trees)
    classes = {klass.__name__: klass for klass in _package_classes()}
    findings = []
    for path, tree in trees.items():
        if path != FENCE:
            scan = _Fence(path, own, classes)
            scan.visit(tree)
            findings += scan.findings
    assert not findings, (
        "library internals used outside videorft_hf/internals.py (move them there, behind a function, and list the "
        "names in tests/test_trl_seams.py):\n  - " + "\n  - ".join(findings)
    )


def _fence_names() -> tuple[set[str], set[str]]:
    """(every identifier and string constant in internals.py, the private or internal library names it uses)."""
    tree = _trees()[FENCE]
    defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    defined |= {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    identifiers, used = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            identifiers.add(node.attr)
            if _private(node.attr) and node.attr not in defined:
                used.add(node.attr)
        elif isinstance(node, ast.Name):
            identifiers.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            identifiers.add(node.value)
            if _private(node.value) and node.value not in defined:
                used.add(node.value)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node.module, "videorft_hf", node.level)
            identifiers |= set(module.split("."))
            for alias in node.names:
                identifiers.add(alias.name)
                if _internal_module(module) or _private(alias.name) or (
                    _is_module(module, "videorft_hf", 0, alias.name) and _internal_module(f"{module}.{alias.name}")
                ):
                    used.add(alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                identifiers |= set(alias.name.split("."))
    return identifiers, used


def test_every_internal_name_the_fence_uses_is_listed():
    """Each private attribute internals.py reads or writes (`x._name`, `getattr(x, "_name")`) and each name it imports
    from an internal library module is in INTERNALS or SEAMS."""
    _, used = _fence_names()
    listed = {spec.rpartition(":")[2].rpartition(".")[2] for spec in [*INTERNALS, *SEAMS]}
    unlisted = sorted(used - listed)
    assert not unlisted, f"used in videorft_hf/internals.py but not listed in tests/test_trl_seams.py: {unlisted}"


def test_every_listed_name_is_used():
    """No stale entry: each INTERNALS name appears in internals.py, each seam is overridden by a package trainer."""
    identifiers, _ = _fence_names()
    stale = [spec for spec in INTERNALS if spec.rpartition(":")[2].rpartition(".")[2] not in identifiers]
    assert not stale, f"listed in INTERNALS but no longer used in videorft_hf/internals.py: {stale}"
    overridden = {name for klass in _package_classes() for name in vars(klass)}
    stale = [spec for spec in SEAMS if spec.rpartition(".")[2] not in overridden]
    assert not stale, f"listed in SEAMS but overridden by no class of the package: {stale}"
    text = "\n".join(path.read_text(encoding="utf-8") for path in SRC.rglob("*.py"))
    stale = [spec for spec in MIRRORED if spec.rpartition(":")[2] not in text]
    assert not stale, f"listed in MIRRORED but named nowhere in src/: {stale}"


# ------------------------------------------------------------------------------------------------ M-RoPE internals
# Each inner Qwen-VL model's `get_rope_index` is replaced per instance by Qwen's M-RoPE rule (its forward calls it,
# and its `*ForConditionalGeneration` calls it through `self.model` when generation starts) and its `rope_deltas` is
# set for decoding from a prefilled cache (internals.apply_position_rule, set_decode_deltas).
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


def test_only_the_fence_touches_the_m_rope_internals():
    offenders = [
        f"{path.relative_to(SRC)}: .{name}"
        for path in SRC.rglob("*.py")
        if path != FENCE
        for name in TRANSFORMERS_NAMES
        if re.search(rf"\.{name}\b", path.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"transformers internals used outside videorft_hf/internals.py: {offenders}"
