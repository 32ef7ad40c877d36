"""A shortened `videorft demo`: every stage runs through the real commands and recipes, and writes its outputs."""

import json

from huggingface_hub import ModelCard

from videorft_hf.cli import main as cli_main


def test_the_exit_status_does_not_depend_on_the_wall_time(monkeypatch, capsys):
    """A slow machine reproducing every learning target exits 0; a missed target exits 1."""
    from videorft_hf import demo

    def fake_run(output_dir, settings, recipes_dir):
        return {"stages": {}, "seconds": 16 * 60.0, "targets": {"format_after_sft": {"met": met}}}

    monkeypatch.setattr(demo, "run_demo", fake_run)
    met = True
    assert demo.main(["--output_dir", "unused"]) == 0
    met = False
    assert demo.main(["--output_dir", "unused"]) == 1


def test_every_stage_shows_a_progress_bar(monkeypatch):
    """No stage of the demo turns its progress bar off (trl/transformers' tqdm bars, `videorft eval`'s own)."""
    import inspect

    from videorft_hf import demo

    source = inspect.getsource(demo)
    assert "--disable_tqdm" not in source and '"--progress", "false"' not in source


def test_quick_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--quick", "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| held-out | untrained | sft | grpo |" in printed and "| target | value | goal | met |" in printed
    result = json.loads((out / "demo_results.json").read_text())
    assert set(result["stages"]) == {"untrained", "sft", "grpo"}
    for summary in result["stages"].values():
        assert summary["num_samples"] == 16 and "per_type" in summary and 0.0 <= summary["format_rate"] <= 1.0
    assert set(result["targets"]) == {"format_after_sft", "multiple_choice_after_grpo", "grpo_reward_last_vs_first_fifth"}
    assert result["seconds"] > 0 and "Wall time:" in printed  # reported; the exit status never depends on it
    import transformers
    import trl

    assert (result["versions"]["transformers"], result["versions"]["trl"]) == (transformers.__version__, trl.__version__)
    assert f"Measured with torch {result['versions']['torch']}, transformers {transformers.__version__}" in printed
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = ModelCard.load(out / "hub-dry-run" / "README.md")
    assert "videorft" in card.data.tags and card.data.eval_results  # evaluation results as model-index entries
    # the results are this checkpoint's, evaluated at the sampling it was trained with (4 frames), as the card says
    assert ("Scores of this checkpoint from `videorft eval` (percent; `results.json`), with video sampled as 4 frames "
            "at 2 fps, 3136 pixels per frame (as in training).") in card.text
    assert "--video_sampling_preset video-r1-train --video_max_frames 4" in card.text
    # The card states the GRPO run that happened (DemoSettings.quick and the demo's flags), not recipes/tiny/grpo.yaml.
    for expected in (
        "learning_rate 0.0002", "max_steps 4", "length bonus +0.2 for correct completions of 8-48 tokens",
        "`format_reward`, `accuracy_reward`, `semantic_consistency_reward` (summed with equal weights)",
        f"| Base model | `{out / 'models' / 'tiny-qwen2.5-vl'}` |", f"| Trained from | `{out / 'sft'}` |",
        "| Optimizer steps | 4 (epoch",
    ):
        assert expected in card.text, expected
    for placeholder in ("not recorded", "not given", "(#)", "<base model id>", "learning_rate 0.001"):
        assert placeholder not in card.text
    assert (out / "hub-dry-run" / "model.safetensors").is_file()
    state = json.loads((out / "grpo" / "checkpoint-4" / "trainer_state.json").read_text())
    rewards = {k for h in state["log_history"] for k in h if k.startswith("rewards/") and k.endswith("/mean")}
    for name in ("format_reward", "accuracy_reward", "semantic_consistency_reward"):
        assert f"rewards/{name}/mean" in rewards
    assert any("shaping/length_bonus" in h for h in state["log_history"])
