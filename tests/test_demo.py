"""A shortened `videorft demo`: every stage runs through the real commands and recipes, and writes its outputs."""

import json

from huggingface_hub import ModelCard

from videorft_hf.cli import main as cli_main


def test_quick_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--quick", "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| held-out | untrained | sft | grpo |" in printed and "| target | value | goal | met |" in printed
    result = json.loads((out / "demo_results.json").read_text())
    assert set(result["stages"]) == {"untrained", "sft", "grpo"}
    for summary in result["stages"].values():
        assert summary["num_samples"] == 16 and "per_type" in summary and 0.0 <= summary["format_rate"] <= 1.0
    assert set(result["targets"]) == {
        "format_after_sft", "multiple_choice_after_grpo", "grpo_reward_last_vs_first_fifth", "minutes",
    }
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = ModelCard.load(out / "hub-dry-run" / "README.md")
    assert "videorft" in card.data.tags and card.data.eval_results  # evaluation results as model-index entries
    assert (out / "hub-dry-run" / "model.safetensors").is_file()
    state = json.loads((out / "grpo" / "checkpoint-4" / "trainer_state.json").read_text())
    rewards = {k for h in state["log_history"] for k in h if k.startswith("rewards/") and k.endswith("/mean")}
    for name in ("format_reward", "accuracy_reward", "semantic_consistency_reward", "length_bonus"):
        assert f"rewards/{name}/mean" in rewards
