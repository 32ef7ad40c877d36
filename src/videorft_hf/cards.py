"""What a training run writes about itself, and the model cards rendered from it: the VideoRFT tags of trl's cards,
the run record hook of the training scripts, `videorft eval` results as model-index entries, and the card template.

    callback = record_run(trainer, "grpo", script_args, training_args, model_args)  # the scripts' hook
    card = render_model_card("you/VideoRFT-7B", "grpo", base_model="Qwen/Qwen2.5-VL-7B-Instruct", run=record)

The trainer and the training scripts use this module while they train; `hub` (which plans and pushes repositories)
uses it to write the card of a published checkpoint. It talks to no server, so training never imports the publishing
stage.

- Model cards are rendered with `huggingface_hub.ModelCard.from_template` from `model_cards/model_card.md`, a
  top-level folder of the repository that the wheel ships as the package `videorft_hf.model_cards` (setuptools'
  `package-dir`, no copy); `model_card_template` finds it in an installed package or in a source checkout.
- The card states what ran: `videorft sft` / `videorft grpo` save a run record (`videorft_run.json`, see
  `run_record`) with the checkpoint (stage, base model, adapter or full, rewards, shaping, sampling, training arguments,
  steps, hardware); the adapter's `adapter_config.json` names the model an adapter applies to. A recipe file is read
  only for a checkpoint without a run record, and the card says so. Unknown values are left out.
- The card's YAML is a `ModelCardData`: base_model, datasets, library_name (`transformers`, or `peft` for an
  adapter), license, pipeline_tag, tags (`videorft_tags(stage)`, the tags trl's own cards get from
  `VideoGRPOTrainer` and from SFT runs through `apply_videorft_tags`) and, when evaluation results are given,
  model-index entries built from `EvalResult`s.
- Recipe keys that look like credentials (`hub_token`, `api_key`, ...) never reach a card.

About 700 lines, one concept kept whole: every sentence a card states is derived here from the run record (most of
the module), so a claim and the record field it rests on are read, and tested, side by side.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .run_record import CHECKPOINT_KINDS, DEFAULT_PIPELINE_TAG, RUN_RECORD_NAME, STAGES, stated_training_args

logger = logging.getLogger(__name__)

MODEL_CARD_TEMPLATES = "videorft_hf.model_cards"

# Recipe keys never shown in a card, whatever their value (`hub_token`, `api_key`, ...; not `length_bonus_max_tokens`).
_SENSITIVE_KEY = re.compile(r"(^|_)(token|secret|password|passwd|api_?key|credentials?)($|_)", re.IGNORECASE)
# Aggregate keys that summarise other scores: shown in the card's table but not model-index entries (no dataset).
_SUMMARY_KEYS = ("average", "avg", "mean", "overall")


# ---------------------------------------------------------------------------------------------------------- tags
def videorft_tags(stage: str) -> list[str]:
    """The tags of every card of a VideoRFT training stage: trl's own (`"trl"`, the stage) plus `"videorft"`.

    `VideoGRPOTrainer._tag_names` is `videorft_tags("grpo")`, so trl's card mechanism (`create_model_card`, called at
    each checkpoint and by `push_to_hub`) writes the same tags as `push_model`; SFT runs get them through
    `apply_videorft_tags`.

    Args:
        stage: `"sft"` or `"grpo"`.

    Returns:
        The tag list, such as `["trl", "grpo", "videorft"]`.

    Example:
        >>> videorft_tags("sft")
        ['trl', 'sft', 'videorft']
    """
    if stage not in STAGES:
        raise ValueError(f"Unknown training stage {stage!r}; choose one of {', '.join(STAGES)}.")
    return ["trl", stage, "videorft"]


def apply_videorft_tags(trainer: Any, stage: str) -> None:
    """Gives a stock trl trainer (e.g. `trl.SFTTrainer` in the SFT script) the VideoRFT tags of `stage`.

    trl writes cards through `create_model_card`, which adds the trainer's tags, and tags the model with
    `model.add_model_tags` in `__init__`; this sets both, so checkpoint cards and `trainer.push_to_hub()` carry the same
    tags as `push_model`.

    Args:
        trainer: A trl trainer instance (after `__init__`).
        stage: `"sft"` or `"grpo"`.

    Example:
        ```python
        trainer = SFTTrainer(model, args=args, train_dataset=dataset, data_collator=collator)
        apply_videorft_tags(trainer, "sft")
        ```
    """
    from .internals import set_hub_tags

    tags = videorft_tags(stage)
    set_hub_tags(trainer, tags)  # on the instance: the class's list is shared by other trainers
    model = getattr(trainer, "model", None)
    if hasattr(model, "add_model_tags"):
        model.add_model_tags(tags)


def record_run(trainer: Any, stage: str, script_args: Any, training_args: Any, model_args: Any) -> Any:
    """Makes a trl trainer record what ran and write the VideoRFT card, in place of trl's generic one.

    The trainer then saves the run record (`videorft_run.json`, see `videorft_hf.run_record`) in every checkpoint
    folder, and its `create_model_card` (which trl calls at each checkpoint and in `push_to_hub`) writes the card
    `push_model` would, rendered from the run record. Call `callback.write(output_dir)` after the final `save_model`.

    Args:
        trainer: A trl trainer (after `__init__`).
        stage: `"sft"` or `"grpo"`.
        script_args, training_args, model_args: The run's script arguments, config and trl `ModelConfig`.

    Returns:
        The callback (a `transformers.TrainerCallback`), with `write(folder)` and `record()`.

    Example:
        >>> callback = record_run(trainer, "sft", script_args, training_args, model_args)  # doctest: +SKIP
        >>> trainer.train(); trainer.save_model(out); callback.write(out)  # doctest: +SKIP
    """
    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    from .internals import replace_model_card
    from .run_record import build_run_record, write_run_record

    def record() -> dict:
        return build_run_record(stage, trainer, script_args, training_args, model_args)

    def create_model_card(model_name=None, dataset_name=None, tags=None) -> None:
        write_trainer_card(trainer, stage, model_name, dataset_name, tags, script_args=script_args, model_args=model_args)

    class RunRecordCallback(TrainerCallback):
        def record(self) -> dict:
            return record()

        def write(self, folder: str | os.PathLike) -> Path | None:
            if not trainer.is_world_process_zero():
                return None
            create_model_card()
            return write_run_record(folder, record())

        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                write_run_record(folder, record())

    replace_model_card(trainer, create_model_card)  # trl's own card names no base model and no training values
    callback = RunRecordCallback()
    trainer.add_callback(callback)
    return callback


def write_trainer_card(
    trainer: Any,
    stage: str,
    model_name: str | None = None,
    dataset_name: str | None = None,
    tags: str | Sequence[str] | None = None,
    *,
    script_args: Any = None,
    model_args: Any = None,
) -> None:
    """Writes the VideoRFT card of a trainer's run to `<output_dir>/README.md` (trl's `create_model_card` seam).

    The card is rendered from the trainer's run record (`build_run_record`); with no script or model arguments (a
    trainer built in Python) it states what the trainer itself holds: model, adapter, rewards, shaping, sampling,
    arguments, steps and hardware.

    Args:
        trainer: The trl trainer.
        stage: `"sft"` or `"grpo"`.
        model_name, dataset_name, tags: As trl's `create_model_card` (the repository name, a Hub dataset id, tags).
        script_args, model_args: The script's `VideoRFTScriptArguments` and trl `ModelConfig`, when a script ran.
    """
    from .run_record import build_run_record

    if not trainer.is_world_process_zero():
        return
    args = trainer.args
    run = build_run_record(stage, trainer, script_args, args, model_args)
    peft_config = getattr(trainer.model, "peft_config", None)
    adapter_config = next(iter(peft_config.values())).to_dict() if peft_config else {}
    adapter_config = {k: sorted(v) if isinstance(v, set | frozenset) else v for k, v in adapter_config.items()}
    kind = "adapter" if adapter_config else "full"
    card = render_model_card(
        args.hub_model_id or model_name or Path(args.output_dir).name,
        stage,
        kind=kind,
        base_model=card_base_model(kind, adapter_config, run, {}),
        datasets=[dataset_name] if is_hub_id(dataset_name) else None,
        run=run,
        tags=[tags] if isinstance(tags, str) else list(tags or []),
        adapter_config=adapter_config,
    )
    os.makedirs(args.output_dir, exist_ok=True)
    card.save(os.path.join(args.output_dir, "README.md"))


# ---------------------------------------------------------------------------------------------------------- eval
def eval_results_from_json(source: str | os.PathLike | Mapping | Sequence) -> list[EvalResult]:
    """Turns `videorft eval` results into `huggingface_hub.EvalResult`s, the model-index entries of a card.

    Accepted forms (a JSON file path or the loaded object):

    - `results.json` of `videorft eval` (its model-index is built again from its `"benchmarks"`, so that the labels
      are this version's, whatever version wrote the file) or any model-index list;
    - the aggregate `run_evaluation` returns (`{"benchmarks": {name: summary}}`), converted by
      `evaluation.results_to_model_index`;
    - a flat `{benchmark: score}`, e.g. `{"MVBench": 62.1}`, for scores computed elsewhere. Names of the paper's six
      benchmarks are recognised in any spelling (`"vsibench"`, `"VSI-Bench"`); summary keys (`average`, `mean`,
      `overall`) name no dataset and get no entry. Scores are taken as given (percent in `videorft eval`).

    Args:
        source: A path to a JSON file, or the parsed JSON.

    Returns:
        The results (task `video-text-to-text`, dataset ids of the paper's benchmarks as in `videorft_hf.evaluation`).

    Raises:
        ValueError: a flat score is not a number, or the JSON has none of the forms above.

    Example:
        >>> [r.dataset_type for r in eval_results_from_json({"mvbench": 62.1})]
        ['OpenGVLab/MVBench']
    """
    from huggingface_hub.repocard_data import model_index_to_eval_results

    if isinstance(source, str | os.PathLike):
        with open(source, encoding="utf-8") as stream:
            source = json.load(stream)
    if isinstance(source, Mapping) and "model-index" in source and "benchmarks" not in source:
        source = source["model-index"]
    if isinstance(source, Mapping):  # results.json: its model-index is built again, with this version's labels
        from .evaluation.results import PAPER_BENCHMARKS, results_to_model_index

        if "benchmarks" not in source:  # flat {benchmark: score}
            names = {_normalise(name): name for name in PAPER_BENCHMARKS}
            benchmarks = {}
            for name, score in source.items():
                if isinstance(score, bool) or not isinstance(score, int | float):
                    raise ValueError(
                        f"Evaluation result {name!r} is {score!r}, not a number: pass `videorft eval`'s results.json "
                        "or a {benchmark: score} object."
                    )
                if _normalise(name) not in _SUMMARY_KEYS:
                    benchmarks[names.get(_normalise(name), name)] = {"score": score}
            source = {"benchmarks": benchmarks}
        source = results_to_model_index(source, "model")
    if not isinstance(source, Sequence) or isinstance(source, str):
        raise ValueError(f"Evaluation results must be results.json, model-index or {{benchmark: score}}: {source!r}.")
    return model_index_to_eval_results(list(source))[1]


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def summary_scores_from_json(source: Any) -> list[tuple[str, Any]]:
    """The summary entries (average, ...) of a flat `{benchmark: score}`: shown in the card, not in model-index."""
    if isinstance(source, str | os.PathLike):
        with open(source, encoding="utf-8") as stream:
            source = json.load(stream)
    if not isinstance(source, Mapping) or "model-index" in source or "benchmarks" in source:
        return []
    return [(name, score) for name, score in source.items() if _normalise(name) in _SUMMARY_KEYS]


# ---------------------------------------------------------------------------------------------------------- cards
def model_card_template(name: str = "model_card.md") -> Path:
    """The path of a card template of the repository's top-level `model_cards/` folder.

    Looked up first in the package `videorft_hf.model_cards` (a wheel, or an editable install, where setuptools maps
    the package to that folder), then in `model_cards/` beside `src/` of the source tree this module was imported
    from (a checkout on `PYTHONPATH`, which sees no `package-dir` mapping).

    Args:
        name: the template's file name.

    Returns:
        The template's path.

    Raises:
        FileNotFoundError: neither place has it (an incomplete install); the message names where it looked.

    Example:
        >>> model_card_template().name
        'model_card.md'
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec(MODEL_CARD_TEMPLATES)
    except ModuleNotFoundError:
        spec = None
    folders = [Path(folder) for folder in (spec.submodule_search_locations or [])] if spec is not None else []
    folders.append(Path(__file__).resolve().parents[2] / "model_cards")  # src/videorft_hf/cards.py -> the repository
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"Card template {name} not found in {', '.join(map(str, folders))}: reinstall videorft_hf (the wheel ships "
        "it as videorft_hf.model_cards) or run from a checkout that has model_cards/."
    )


def render_model_card(
    repo_id: str,
    stage: str,
    *,
    kind: str = "full",
    base_model: str | None = None,
    datasets: Sequence[str] | None = None,
    run: Mapping[str, Any] | None = None,
    recipe: Mapping[str, Any] | None = None,
    eval_results: Sequence[EvalResult] | None = None,
    summary_scores: Sequence[tuple[str, Any]] = (),
    license: str | None = None,
    hardware: str | None = None,
    tags: Sequence[str] = (),
    pipeline_tag: str = DEFAULT_PIPELINE_TAG,
    adapter_config: Mapping[str, Any] | None = None,
    trainer_state: Mapping[str, Any] | None = None,
    eval_provenance: Mapping[str, Any] | None = None,
) -> ModelCard:
    """Renders the model card of a VideoRFT checkpoint from `model_cards/model_card.md`.

    The training section states what ran: the run record saved with the checkpoint (`run`, see
    `videorft_hf.run_record`), else, for a checkpoint trained without the package's scripts, the values of a recipe
    file given at publishing (`recipe`), labelled as such. A value neither holds is left out, never a placeholder.

    Args:
        repo_id: The repository the card is for (used in the usage snippet and as the model-index name).
        stage: `"sft"` or `"grpo"`.
        kind: `"full"`, `"adapter"` or `"merged"`.
        base_model: Id or path of the model this one was trained from (a Hub id also goes into the metadata).
        datasets: Hub ids of the training datasets.
        run: The checkpoint's run record (`videorft_run.json`).
        recipe: Recipe values for a checkpoint without a run record; keys that look like credentials (`hub_token`,
            ...) are left out. Ignored when `run` is given.
        eval_results: Model-index entries (see `eval_results_from_json`).
        summary_scores: `(name, score)` pairs shown in the results table only (e.g. the average).
        license: License id for the metadata (e.g. `"apache-2.0"`).
        hardware: Hardware the run used, e.g. `"8x H100 80GB"` (default: the run record's).
        tags: Extra tags, after `videorft_tags(stage)`.
        pipeline_tag: The Hub pipeline tag.
        adapter_config: The adapter's `adapter_config.json` (adapter and merged kinds).
        trainer_state: The checkpoint's `trainer_state.json`, for the number of steps (when the run record has none).
        eval_provenance: Whose scores `eval_results` are and how they were computed (see `eval_note`); the card says
            so above its results table.

    Returns:
        A `huggingface_hub.ModelCard`; `card.data` is its `ModelCardData`.

    Example:
        >>> card = render_model_card("you/VideoRFT-7B", "grpo", base_model="Qwen/Qwen2.5-VL-7B-Instruct")
        >>> card.data.tags
        ['trl', 'grpo', 'videorft']
    """
    if kind not in CHECKPOINT_KINDS[1:]:
        raise ValueError(f"kind must be one of {', '.join(CHECKPOINT_KINDS[1:])}, got {kind!r}.")
    values = _run_values(run) if run else _public_recipe(recipe or {})
    adapter_config = dict(adapter_config or {})
    eval_results = list(eval_results or [])
    model_name = repo_id.split("/")[-1]
    adapter_type = str(adapter_config.get("peft_type", "LoRA")).replace("LORA", "LoRA")
    card_tags = videorft_tags(stage) + [t for t in tags if t not in videorft_tags(stage)]
    if kind == "adapter" and adapter_type == "LoRA" and "lora" not in card_tags:
        card_tags.append("lora")
    card_data = ModelCardData(
        base_model=base_model if is_hub_id(base_model) else None,
        datasets=list(datasets) if datasets else None,
        language=["en"],
        library_name="peft" if kind == "adapter" else "transformers",
        license=license,
        pipeline_tag=pipeline_tag,
        tags=card_tags,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )
    eval_rows = [(r.dataset_name, r.metric_name or r.metric_type, r.metric_value) for r in eval_results]
    eval_rows += [(str(name), "accuracy", score) for name, score in summary_scores]
    if run:
        source = f"From the run record saved with the checkpoint (`{RUN_RECORD_NAME}`): the values that ran."
        recipe_title = "Run record"
    elif values:
        source = (
            "From the recipe file given at publishing: the checkpoint has no run record, so these values are the "
            "recipe's, not recorded from the run."
        )
        recipe_title = "Recipe values (given at publishing, not recorded from the run)"
    else:
        source = "The checkpoint has no run record; only what its files show is stated."
        recipe_title = ""
    return ModelCard.from_template(
        card_data,
        template_path=str(model_card_template()),
        model_name=model_name,
        repo_id=repo_id,
        kind=kind,
        intro=_intro(kind, stage, adapter_type, base_model),
        base_model_known=bool(base_model),
        base_model_literal=json.dumps(base_model)
        if base_model
        else f'PeftConfig.from_pretrained("{repo_id}").base_model_name_or_path',
        # A Python string literal for the usage snippet (JSON string syntax is valid Python).
        system_prompt_literal=json.dumps(values["system_prompt"], ensure_ascii=False)
        if values.get("system_prompt")
        else None,
        training_source=source,
        training_rows=_training_rows(
            stage, kind, base_model, datasets, values, run or {}, adapter_config, trainer_state, hardware
        ),
        recipe_title=recipe_title,
        recipe_yaml=_to_yaml(run if run else values) if values else None,
        eval_rows=eval_rows,
        eval_note=eval_note(eval_provenance),
        sampling_code=_sampling_code(values),
        sampling_advice=_sampling_advice(values, bool(run), kind, repo_id, base_model),
        versions=_versions(with_peft=kind != "full"),
    )


def _intro(kind: str, stage: str, adapter_type: str, base_model: str | None) -> str:
    """The card's first paragraph; the base model is linked when it is a Hub id, named when it is a local folder."""
    stage_title = "supervised fine-tuning on video chain-of-thought" if stage == "sft" else "GRPO"
    if base_model is None:
        base = None
    elif is_hub_id(base_model):
        base = f"[{base_model}](https://huggingface.co/{base_model})"
    else:
        base = f"`{base_model}` (a local model folder)"
    if kind == "adapter":
        start = f"A {adapter_type} adapter" + (f" for {base}" if base else "")
        return f"{start}, trained with the VideoRFT recipe ({stage_title}). Load it on top of its base model with peft."
    if kind == "merged":
        start = f"{base} with a" if base else "A model with a"
        return (
            f"{start} {adapter_type} adapter trained with the VideoRFT recipe ({stage_title}) merged into its weights. "
            "It loads like any transformers checkpoint."
        )
    start = f"A fine-tuned version of {base}" if base else "A fine-tuned model"
    return f"{start}, trained with the VideoRFT recipe ({stage_title})."


def _run_values(run: Mapping[str, Any]) -> dict[str, Any]:
    """A run record as flat card values: training arguments, shaping, rewards, sampling and system prompt."""
    values: dict[str, Any] = {**run.get("training_args", {}), **run.get("shaping", {})}
    for key in ("reward_funcs", "reward_weights", "sampling", "system_prompt"):
        if key in run:
            values[key] = run[key]
    return _public_recipe(values)


def _public_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    dropped = [key for key in recipe if _SENSITIVE_KEY.search(str(key))]
    if dropped:
        logger.info("Recipe keys left out of the card (they may hold credentials): %s", ", ".join(map(str, dropped)))
    return {key: value for key, value in recipe.items() if key not in dropped}


def _to_yaml(values: Mapping[str, Any]) -> str:
    import yaml

    values = {key: value for key, value in values.items() if not _SENSITIVE_KEY.search(str(key))}
    return yaml.safe_dump(dict(values), sort_keys=False, allow_unicode=True, width=100).rstrip()


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return " ".join(text.split()).replace("|", "\\|")


def _training_rows(stage, kind, base_model, datasets, values, run, adapter_config, trainer_state, hardware) -> list:
    """The rows of the card's training table; a row whose value is unknown is left out."""
    rows = [
        (
            "Stage",
            "SFT on video chain-of-thought (trl `SFTTrainer`)"
            if stage == "sft"
            else "GRPO reinforcement fine-tuning (`VideoGRPOTrainer`, a trl `GRPOTrainer`)",
        )
    ]
    if kind == "full":
        rows.append(("Checkpoint", "full model"))
    else:
        details = ", ".join(
            f"{key} {_cell(adapter_config[key])}"
            for key in ("r", "lora_alpha", "lora_dropout", "target_modules")
            if adapter_config.get(key) is not None
        )
        what = "adapter" if kind == "adapter" else "adapter merged into the base weights"
        rows.append(("Checkpoint", f"{what} ({details})" if details else what))
    if run.get("quantization"):
        rows.append(("Base weights in training", f"{run['quantization']} (QLoRA)"))
    if base_model:
        rows.append(("Base model", f"`{base_model}`"))
    trained_from = run.get("model_name_or_path")
    if trained_from and trained_from != base_model:
        rows.append(("Trained from", f"`{trained_from}`"))
    if datasets:
        rows.append(("Training data", ", ".join(f"`{d}`" for d in datasets)))
    elif run.get("dataset_name"):
        rows.append(("Training data", f"`{run['dataset_name']}`"))
    if run.get("train_rows") is not None:
        rows.append(("Training rows", str(run["train_rows"])))
    if stage == "grpo" and isinstance(values.get("reward_funcs"), list):
        text = ", ".join(f"`{r}`" for r in values["reward_funcs"])
        if values.get("reward_weights"):
            text += f" (weights {_cell(values['reward_weights'])})"
        else:
            text += " (summed with equal weights)"
        rows.append(("Rewards", text))
    shaping = []
    if values.get("length_bonus"):
        value, low, high = (values.get(f"length_bonus_{key}") for key in ("value", "min_tokens", "max_tokens"))
        text = "length bonus" + (f" +{value}" if value is not None else "")
        if low is not None and high is not None:
            text += f" for correct completions of {low}-{high} tokens"
        shaping.append(text)
    if values.get("temporal_grpo"):
        bonus = values.get("temporal_bonus")
        shaping.append("T-GRPO bonus" + (f" +{bonus}" if bonus is not None else ""))
    if stage == "grpo" and ("length_bonus" in values or "temporal_grpo" in values):
        rows.append(("Reward shaping", "; ".join(shaping) if shaping else "none"))
    sampling = _sampling_summary(values)
    if sampling:
        rows.append(("Video sampling", sampling))
    if "system_prompt" in values:
        system_prompt = values["system_prompt"]
        rows.append(("System prompt", f"`{_cell(system_prompt)}`" if system_prompt else "none"))
    skips = run.get("skipped_samples")
    if isinstance(skips, Mapping):  # recorded with on_bad_sample: skip, over all processes
        reasons = ", ".join(f"{reason.replace('_', ' ')} {n}" for reason, n in skips.get("by_reason", {}).items())
        rows.append((
            "Skipped samples",
            f"{skips.get('skipped', 0)} of {skips.get('samples', 0)} (`on_bad_sample: skip`"
            + (f"; {reasons})" if reasons else ")"),
        ))
    hyper = [f"{key} {_cell(values[key])}" for key in stated_training_args() if values.get(key) is not None]
    if hyper:
        rows.append(("Hyperparameters", ", ".join(hyper)))
    step, epoch = run.get("global_step"), run.get("epoch")
    if step is None and trainer_state:
        step, epoch = trainer_state.get("global_step"), trainer_state.get("epoch")
    if step is not None:
        rows.append(("Optimizer steps", f"{step}" + (f" (epoch {round(float(epoch), 3)})" if epoch is not None else "")))
    hardware = hardware or run.get("hardware")
    if hardware:
        rows.append(("Hardware", _cell(hardware)))
    return rows


def _card_sampling(values: Mapping[str, Any]) -> tuple[str | None, Any, str] | None:
    """The video sampling a card states: `(preset, VideoSamplingConfig, label)` from a run record (the config that
    ran) or from a recipe's preset and overrides; None when neither says. A recipe whose values build no config gives
    `(preset, None, why)`."""
    from .video import VideoSamplingConfig

    if isinstance(values.get("sampling"), Mapping):  # a run record: the config that ran
        recorded = dict(values["sampling"])
        preset = recorded.pop("preset", None)
        names = {field.name for field in dataclasses.fields(VideoSamplingConfig)}
        config = VideoSamplingConfig(**{k: v for k, v in recorded.items() if k in names})
        return preset, config, f"preset `{preset}` as run" if preset else "as run"
    if "video_sampling_preset" in values:
        from .configs import SAMPLING_OVERRIDES

        preset = values["video_sampling_preset"]
        overrides = {
            field: values[option] for option, field in SAMPLING_OVERRIDES.items() if values.get(option) is not None
        }
        try:
            config = VideoSamplingConfig.from_preset(preset, **overrides)
        except (TypeError, ValueError) as error:
            return preset, None, f"preset `{preset}` ({error})"
        return preset, config, f"preset `{preset}`{' with overrides' if overrides else ''}"
    return None


def _sampling_summary(values: Mapping[str, Any]) -> str | None:
    """The video sampling in words: the run's resolved config, or a recipe's preset and overrides; None if unknown."""
    found = _card_sampling(values)
    if found is None:
        return None
    _, config, label = found
    return f"{label}: {config.describe()}" if config is not None else label


def _sampling_code(values: Mapping[str, Any]) -> str:
    """The Python expression of the card's usage snippet that builds the training sampling (the paper's evaluation
    preset when the card does not know it)."""
    from .video import VideoSamplingConfig

    found = _card_sampling(values)
    if found is None or found[1] is None:
        return 'VideoSamplingConfig.from_preset("videorft-eval")'
    preset, config, _ = found
    if preset in VideoSamplingConfig.preset_names():
        differences = config.differences(VideoSamplingConfig.from_preset(preset))
        arguments = [json.dumps(preset)] + [f"{name}={ours!r}" for name, (ours, _) in differences.items()]
        return f"VideoSamplingConfig.from_preset({', '.join(arguments)})"
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "patch_factor"}
    return f"VideoSamplingConfig({', '.join(f'{name}={value!r}' for name, value in fields.items())})"


def _sampling_advice(values: Mapping[str, Any], from_run: bool, kind: str, repo_id: str, base_model: str | None) -> str:
    """The card's sentence on how to sample video for this model: as in training (with the `videorft eval` flags
    that do), or, when the card does not know the training sampling, that the snippet uses the paper's evaluation
    preset."""
    from .configs import sampling_flags

    found = _card_sampling(values)
    if found is None or found[1] is None:
        return (
            "The snippet samples video as the paper evaluates (preset `videorft-eval`: 32 frames); the checkpoint "
            "does not state the sampling it was trained with. If you know it, use it here and in `videorft eval` "
            "(whose default is also `videorft-eval`): a model scores best on video sampled as in training."
        )
    preset, config, _ = found
    source = "its run record (`videorft_run.json`)" if from_run else "the recipe given at publishing"
    model = (
        f"--model_name_or_path {base_model or '<base model>'} --adapter_path {repo_id}"
        if kind == "adapter"
        else f"--model_name_or_path {repo_id}"
    )
    flags = sampling_flags(config, preset)
    evaluate = (
        f"`videorft eval {model} {' '.join(flags)} --benchmarks ...`"
        if flags
        else f"`videorft eval {model}` with the sampling values of {source}"
    )
    return (
        f"The snippet samples video as in training, per {source}: {config.describe()}. Evaluate the same way: "
        f"{evaluate}. Without sampling flags `videorft eval` uses the paper's evaluation sampling (preset "
        "`videorft-eval`: 32 frames), and it warns when that differs from the sampling in a model's run record. "
        "Use the system prompt and question template of training too (the snippet does)."
    )


def eval_note(provenance: Mapping[str, Any] | None) -> str:
    """The sentence above a card's results table: whose scores these are and how they were computed.

    Args:
        provenance: What `hub.plan_model_repo` found out about the results: `{"status": "this" | "other" |
            "unknown", "file", "model", "sampling", "training_sampling"}` (None: results passed without a source).

    Returns:
        The sentence (markdown).
    """
    from .video import VideoSamplingConfig

    provenance = dict(provenance or {})
    status = provenance.get("status")
    if status == "this":
        text = f"Scores of this checkpoint from `videorft eval` (percent; `{Path(provenance['file']).name}`)"
        sampling = provenance.get("sampling")
        if isinstance(sampling, Mapping):
            names = {f.name for f in dataclasses.fields(VideoSamplingConfig)}
            config = VideoSamplingConfig(**{k: v for k, v in sampling.items() if k in names})
            text += f", with video sampled as {config.describe()}"
            training = provenance.get("training_sampling")
            if isinstance(training, Mapping):
                trained = VideoSamplingConfig(**{k: v for k, v in training["sampling"].items() if k in names})
                text += (
                    " (as in training)"
                    if not config.differences(trained)
                    else f" (training sampled {trained.describe()})"
                )
        return text + "."
    if status == "other":
        return (
            f"**These are the scores of `{provenance['model']}`, not of this checkpoint**: `videorft eval` evaluated "
            f"`{provenance['model']}` (`{Path(provenance['file']).name}`), and they were published with this model "
            "with `--allow-other-model-results`. They do not measure this checkpoint."
        )
    if status == "unknown":
        return (
            "Scores given at publishing (percent). Their file names no model, so they were not checked against this "
            "checkpoint, and it does not say how they were computed."
        )
    return "Scores given at publishing (percent)."


def _versions(with_peft: bool) -> list[tuple[str, str]]:
    names = ["videorft_hf", "transformers", "trl"] + (["peft"] if with_peft else []) + ["torch", "huggingface_hub"]
    versions = []
    for name in names:
        try:
            versions.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


# ---------------------------------------------------------------------------------------------------------- helpers
def card_base_model(kind: str, adapter_config: Mapping, run: Mapping, recipe: Mapping) -> str | None:
    """An adapter applies to the model its config names; a full checkpoint descends from the run's base model."""
    candidates = [adapter_config.get("base_model_name_or_path")] if kind != "full" else []
    candidates += [run.get("base_model"), recipe.get("model_name_or_path")]
    return next((candidate for candidate in candidates if candidate), None)


def is_hub_id(value: Any) -> bool:
    """A string that names a Hub repository rather than a local folder."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(value, str) or not value or value.startswith((".", "/", "~")) or os.path.exists(value):
        return False
    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True
