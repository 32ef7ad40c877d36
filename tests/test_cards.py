"""`videorft_hf.cards`: the VideoRFT tags on trl's own cards, `videorft eval` results as model-index entries, the card
template's one location, and the split along the data flow (training imports cards, never the publishing stage)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from huggingface_hub import ModelCard

from videorft_hf import cards
from videorft_hf.cards import eval_results_from_json, videorft_tags
from videorft_hf.evaluation import PAPER_RESULTS

AGGREGATE = {**PAPER_RESULTS["VideoRFT-7B"], "average": 58.7}  # the paper's VideoRFT-7B scores and their mean


def cards_video_config():
    """The tiny recipes' sampling (4 frames of 56x56), as the demo's run records hold it."""
    from videorft_hf.video import VideoSamplingConfig

    return VideoSamplingConfig.from_preset(
        "video-r1-train", max_frames=4, min_pixels=3136, max_pixels=3136, image_min_pixels=3136, image_max_pixels=3136
    )


def test_training_does_not_import_the_publishing_stage():
    """The trainer and the training scripts write tags, run records and cards through `cards`; `hub` (repo plans,
    uploads) is imported only by what publishes, and the package's `push_model` still reaches it when asked for."""
    code = (
        "import sys\n"
        "import videorft_hf.trainer, videorft_hf.scripts.sft, videorft_hf.scripts.grpo\n"
        "print('videorft_hf.hub' in sys.modules)\n"
        "import videorft_hf\n"
        "print(videorft_hf.push_model.__module__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "videorft_hf.hub"]


def test_publishing_reads_eval_results_without_the_generators():
    """A card's results come from `videorft_hf.evaluation.results` alone: neither the generators, the runner, nor
    torch are imported to turn a results.json into model-index entries."""
    code = (
        "import json, sys\n"
        "from videorft_hf.cards import eval_results_from_json\n"
        "summary = {'score': 62.1, 'num_samples': 2, 'per_type': {'multiple choice': {'score': 62.1, 'num_samples': 2}}}\n"
        "results = eval_results_from_json({'benchmarks': {'MVBench': summary}})\n"
        "print(json.dumps([results[0].dataset_type, results[0].metric_value]))\n"
        "print(sorted(m for m in sys.modules if m.startswith('videorft_hf.evaluation') or m in ('torch', 'trl')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert json.loads(lines[0]) == ["OpenGVLab/MVBench", 62.1]
    assert lines[1] == str(["videorft_hf.evaluation", "videorft_hf.evaluation.results"])


def test_videorft_tags_are_the_trainer_tags_and_reach_trl_sft_cards(tmp_path):
    from trl import SFTConfig, SFTTrainer

    from videorft_hf.cards import apply_videorft_tags
    from videorft_hf.testing import build_tiny_vlm
    from videorft_hf.trainer import VideoGRPOTrainer

    assert videorft_tags("grpo") == ["trl", "grpo", "videorft"]
    assert VideoGRPOTrainer._tag_names == videorft_tags("grpo")  # what trl's create_model_card adds for GRPO
    with pytest.raises(ValueError, match="sft, grpo"):
        videorft_tags("dpo")

    model, processor = build_tiny_vlm("qwen2_5_vl")
    args = SFTConfig(output_dir=str(tmp_path), report_to=[], max_steps=1, use_cpu=True, save_strategy="no")
    rows = datasets.Dataset.from_dict(
        {"messages": [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]]}
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=processor.tokenizer)
    apply_videorft_tags(trainer, "sft")
    trainer.create_model_card(model_name="sft-run")  # trl's own mechanism, as at every checkpoint
    card = ModelCard.load(tmp_path / "README.md")
    assert set(videorft_tags("sft")) <= set(card.data.tags)
    assert set(videorft_tags("sft")) <= set(trainer.model.model_tags)
    assert SFTTrainer._tag_names == ["trl", "sft"]  # only this trainer instance was retagged


def test_eval_results_forms(tmp_path):
    from huggingface_hub.repocard_data import eval_results_to_model_index

    from videorft_hf.evaluation import aggregate_results, results_to_model_index

    results = eval_results_from_json(AGGREGATE)
    assert [r.dataset_type for r in results] == [
        "nyu-visionx/VSI-Bench",
        "lmms-lab/VideoMMMU",
        "yale-nlp/MMVU",
        "OpenGVLab/MVBench",
        "lmms-lab/TempCompass",
        "lmms-lab/Video-MME",
    ]  # "average" summarises the others: no dataset, no model-index entry
    assert [r.metric_value for r in results] == [36.8, 51.1, 68.5, 62.1, 73.7, 59.8]
    assert eval_results_from_json({"vsibench": 1.5, "my-bench": 2})[0].dataset_name == "VSI-Bench"
    assert eval_results_from_json({"my-bench": 2})[0].dataset_type == "my-bench"
    assert eval_results_from_json(eval_results_to_model_index("m", results)) == results

    # what `videorft eval` returns and writes as results.json
    records = [{"problem_type": "multiple choice", "score": 1.0, "error": None}]
    records += [{"problem_type": "regression", "score": 0.5, "error": None}]
    aggregate = aggregate_results({"VSI-Bench": records, "MVBench": records[:1]})
    from_aggregate = eval_results_from_json(aggregate)
    assert [(r.dataset_name, r.metric_value) for r in from_aggregate][:2] == [
        ("VSI-Bench", 75.0),
        ("VSI-Bench", 100.0),
    ]
    results_json = tmp_path / "results.json"
    results_json.write_text(json.dumps({**aggregate, "model-index": results_to_model_index(aggregate, "ckpt")}))
    assert eval_results_from_json(results_json) == from_aggregate
    with pytest.raises(ValueError, match="'mvbench' is .* not a number"):
        eval_results_from_json({"mvbench": {"acc": 3}})


def test_card_template_lives_in_the_top_level_model_cards_folder_and_ships_as_a_package():
    """One copy of the templates, `model_cards/` at the repository root: the wheel maps it to the package
    `videorft_hf.model_cards` (package-dir, listed in setup.py), and a source checkout finds it there too."""
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parents[1]
    template = root / "model_cards" / "model_card.md"
    assert cards.model_card_template().read_text(encoding="utf-8") == template.read_text(encoding="utf-8")
    assert not (root / "src" / "videorft_hf" / "model_cards").exists()  # no copy under src/
    setuptools = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"": "src", cards.MODEL_CARD_TEMPLATES: "model_cards"}
    assert setuptools["package-data"][cards.MODEL_CARD_TEMPLATES] == ["*.md"]
    assert f'"{cards.MODEL_CARD_TEMPLATES}"' in (root / "setup.py").read_text(encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="Card template missing.md not found in .*model_cards"):
        cards.model_card_template("missing.md")


# ---------------------------------------------------------------------------------------------------------- markdown
def _headings(card_text: str) -> list[str]:
    """The headings a CommonMark parser finds in a card's body (after its YAML header)."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").parse(card_text.split("---", 2)[2])
    return [tokens[i + 1].content for i, token in enumerate(tokens) if token.type == "heading_open"]


RUN = {
    "stage": "grpo",
    "base_model": "Qwen/Qwen2.5-VL-7B-Instruct",
    "system_prompt": None,
    "reward_funcs": ["format_reward"],
    "training_args": {"learning_rate": 1e-6},
    "sampling": {"preset": "video-r1-train", **cards_video_config().to_dict()},
}


@pytest.mark.parametrize("kind", ["full", "adapter", "merged"])
@pytest.mark.parametrize("source", ["run record", "recipe", "nothing"])
@pytest.mark.parametrize("with_results", [True, False])
def test_every_card_variant_renders_its_headings_under_commonmark(kind, source, with_results):
    values = {"run record": {"run": RUN}, "recipe": {"recipe": {"beta": 0.04, "video_sampling_preset": "videorft-train"}},
              "nothing": {}}[source]
    results = eval_results_from_json({"mvbench": 62.1}) if with_results else None
    card = cards.render_model_card(
        "you/VideoRFT-7B", "grpo", kind=kind, base_model="Qwen/Qwen2.5-VL-7B-Instruct", eval_results=results,
        adapter_config={"r": 8} if kind != "full" else None, **values,
    )
    expected = ["VideoRFT-7B", "Quick start", "Training", *(["Evaluation"] if with_results else []),
                "Framework versions", "Citations"]
    assert _headings(str(card)) == expected


def test_the_card_samples_and_advises_as_training_did():
    """The usage snippet builds the run record's sampling and the advice names the `videorft eval` flags that
    reproduce it (the demo trained at 4 frames, where `videorft eval` defaults to 32)."""
    import re

    text = str(cards.render_model_card("you/m", "grpo", run=RUN))
    snippet = re.search(r"sampling = (.*)\n", text).group(1)
    from videorft_hf.video import VideoSamplingConfig

    assert eval(snippet, {"VideoSamplingConfig": VideoSamplingConfig}) == cards_video_config()
    assert "The snippet samples video as in training, per its run record (`videorft_run.json`): 4 frames" in text
    assert ("`videorft eval --model_name_or_path you/m --video_sampling_preset video-r1-train --video_max_frames 4 "
            "--video_min_pixels 3136 --video_max_pixels 3136") in text
    assert "sampling preset as in training; `videorft eval` does" not in text
    unknown = str(cards.render_model_card("you/m", "grpo"))
    assert 'sampling = VideoSamplingConfig.from_preset("videorft-eval")' in unknown
    assert "does not state the sampling it was trained with" in unknown


def test_the_results_note_says_whose_scores_they_are():
    sampling = cards_video_config().to_dict()
    this = cards.eval_note({"status": "this", "file": "eval/results.json", "sampling": sampling,
                            "training_sampling": {"sampling": sampling}})
    assert this == (
        "Scores of this checkpoint from `videorft eval` (percent; `results.json`), with video sampled as 4 frames at "
        "2 fps, 3136 pixels per frame (as in training)."
    )
    assert "not of this checkpoint" in cards.eval_note({"status": "other", "file": "r.json", "model": "out/grpo"})
    assert "not checked" in cards.eval_note({"status": "unknown", "file": "r.json"})


def test_results_json_of_any_version_gets_this_versions_labels(tmp_path):
    """A results.json written before the labels were fixed carries "combined (accuracy and MRA)" for a mean over all
    five problem types; its model-index is built again from its per-type scores, with labels that say what they are."""
    per_type = {
        "multiple choice": {"score": 64.516, "num_samples": 62}, "regression": {"score": 25.714, "num_samples": 7},
        "free-form": {"score": 63.519, "num_samples": 9}, "OCR": {"score": 12.5, "num_samples": 8},
        "numerical": {"score": 30.0, "num_samples": 10},
    }
    old = {
        "model_name_or_path": "outputs/demo/grpo",
        "benchmarks": {"VideoRFT-mini": {"score": 53.66, "combined": 53.66, "per_type": per_type}},
        "model-index": [{"name": "grpo", "results": [{
            "task": {"type": "video-text-to-text"}, "dataset": {"name": "VideoRFT-mini", "type": "VideoRFT-mini"},
            "metrics": [{"type": "accuracy", "value": 53.66, "name": "combined (accuracy and MRA)"}],
        }]}],
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(old))
    labels = {r.metric_name: r.metric_value for r in eval_results_from_json(path)}
    n_mc, n_reg = 62, 7
    assert labels == {
        "mean per-sample score over all problem types (OCR, free-form, multiple choice, numerical, regression)": 53.66,
        "combined (accuracy and MRA)": round((n_mc * 64.516 + n_reg * 25.714) / (n_mc + n_reg), 2),  # 60.58
        "multiple-choice accuracy": 64.52,
        "MRA": 25.71,
    }
