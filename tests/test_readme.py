"""Every command in the README exists and its arguments parse; the tiny-model tests run the same commands for real.

The commands that need a GPU and the real checkpoints (the paper's recipes) are parsed, not run: parsing checks
the recipe files, the flags and the script entry points a user would type.
"""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from videorft_hf.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


COMMANDS_IN_README = readme_commands()


def test_readme_has_the_two_setup_commands_first():
    assert COMMANDS_IN_README[:2] == ["make demo", "make test"]
    makefile = (REPO / "Makefile").read_text()
    assert "\ndemo:" in makefile and "\ntest:" in makefile
    assert "make test" in (REPO / ".ci" / "run").read_text()


def _parse(script: str, argv: list[str]):
    import importlib

    module = importlib.import_module(f"videorft_hf.scripts.{script}")
    return module.make_parser().parse_args_and_config(args=argv)


@pytest.mark.parametrize("command", [c for c in COMMANDS_IN_README if c.startswith(("videorft ", "accelerate "))])
def test_training_eval_and_publish_commands_parse(command):
    words = shlex.split(command)
    if words[0] == "accelerate":
        config = words[words.index("--config_file") + 1] if "--config_file" in words else None
        if config:
            assert (REPO / config).is_file(), config
        module = words[words.index("-m") + 1]
        script, argv = module.rsplit(".", 1)[1], words[words.index("-m") + 2 :]
    else:
        script, argv = words[1], words[2:]
        assert script in COMMANDS, f"`videorft {script}` is not a command"
    if script in ("sft", "grpo", "eval"):
        # bf16 recipes need --use_cpu on a CPU-only machine; nothing is loaded or trained here
        extra = ["--use_cpu", "true"] if script != "eval" else []
        parsed = _parse(script, argv + extra)
        assert parsed
    elif script == "push":
        from videorft_hf.scripts.push import make_parser

        args = make_parser().parse_args(argv)
        assert args.repo_id
    elif script == "env":
        assert argv == []


def test_dataset_builder_commands_exist():
    for command in COMMANDS_IN_README:
        if command.startswith("python dataset_scripts/"):
            script = REPO / shlex.split(command)[1]
            assert script.is_file(), script
            result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
            assert result.returncode == 0 and "--input" in result.stdout


def test_install_lines_name_real_extras():
    pyproject = (REPO / "pyproject.toml").read_text()
    for command in COMMANDS_IN_README:
        match = re.match(r'pip install -e "\.\[(\w+)\]"', command)
        if match:
            assert f"\n{match.group(1)} = [" in pyproject, match.group(1)


def _release_rows(root: Path) -> Path:
    """Two RL records in the release schema with their (real) videos; returns the JSONL."""
    from videorft_hf.testing import write_test_video

    records = []
    for i in range(2):
        write_test_video(root / "videos" / f"clip{i}.mp4", num_frames=8, fps=4.0, width=56, height=56)
        records.append(
            {"problem_id": i, "problem": f"Which shape moves first in clip {i}?", "data_type": "video",
             "problem_type": "multiple choice", "options": ["A. circle", "B. square"],
             "solution": "<answer>A</answer>", "path": f"./videos/clip{i}.mp4", "data_source": "test"}
        )
    path = root / "rl.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_the_publishing_command_runs_as_written_on_what_videorft_grpo_wrote(tmp_path, monkeypatch):
    """The README's dry-run push, word for word, on the folder `videorft grpo` writes and `videorft eval`'s results."""
    from huggingface_hub import ModelCard

    from videorft_hf.cli import main
    from videorft_hf.testing import save_tiny_vlm

    (command,) = [c for c in COMMANDS_IN_README if c.startswith("videorft push model") and "--dry-run" in c]
    monkeypatch.chdir(tmp_path)
    data = _release_rows(tmp_path)
    model = save_tiny_vlm("qwen2_5_vl", tmp_path / "tiny")
    assert main(["grpo", "--config", str(REPO / "recipes" / "tiny" / "grpo.yaml"), "--model_name_or_path", str(model),
                 "--dataset_name", str(data), "--media_root", str(tmp_path), "--output_dir", "out/grpo",
                 "--max_steps", "1", "--num_generations", "2", "--per_device_train_batch_size", "2",
                 "--max_completion_length", "4", "--learning_rate", "3e-6", "--save_strategy", "no"]) == 0
    sampling = ["--video_sampling_preset", "video-r1-train", "--video_min_frames", "4", "--video_max_frames", "4",
                "--video_min_pixels", "3136", "--video_max_pixels", "3136"]
    assert main(["eval", "--model_name_or_path", "out/grpo", "--benchmarks", f"Mini={data}", "--media_root",
                 str(tmp_path), "--output_dir", "eval", "--max_new_tokens", "4", "--progress", "false", *sampling]) == 0

    assert main(shlex.split(command)[1:]) == 0  # exactly as the README writes it
    card = ModelCard.load(tmp_path / "hub-dry-run" / "VideoRFT-7B" / "README.md")
    assert card.data.eval_results and card.data.tags == ["trl", "grpo", "videorft"]
    for expected in ("learning_rate 3e-06", "max_steps 1", "num_generations 2", "| Optimizer steps | 1 (epoch",
                     "length bonus +0.2 for correct completions of 8-48 tokens", "`format_reward`, `accuracy_reward`"):
        assert expected in card.text, expected


def test_the_readme_quotes_how_stock_grpo_trainer_fails_on_video(tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from videorft_hf.testing import save_tiny_vlm, write_test_video

    quoted = re.search(r"`ValueError: (Found N <\|video_pad\|> tokens in the text but no videos were passed\.)`",
                       (REPO / "README.md").read_text().replace("\n", " "))
    assert quoted, "the README no longer states how stock trl fails on video"
    video = write_test_video(tmp_path / "clip.mp4", num_frames=8, fps=4.0, width=56, height=56)
    prompt = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
    args = GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=4, max_steps=1, report_to=[], use_cpu=True, bf16=False)

    def zero_reward(completions, **kwargs):
        return [0.0] * len(completions)

    trainer = GRPOTrainer(str(save_tiny_vlm("qwen2_5_vl", tmp_path / "tiny")), reward_funcs=[zero_reward], args=args,
                          train_dataset=Dataset.from_list([{"prompt": prompt, "video": str(video)}] * 2))
    pattern = re.escape(quoted.group(1)).replace("N", r"\d+")
    with pytest.raises(ValueError, match=pattern):
        trainer.train()
    assert trainer.state.global_step == 0


def _layout_units() -> list[list[str]]:
    """The README layout table's rows, top to bottom, as the top-level units of `src/videorft_hf/` each row names."""
    text = (REPO / "README.md").read_text()
    table = text[text.index("`src/videorft_hf/`, in the order of the data flow") : text.index("Top level:")]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    return [[name.removesuffix(".py").rstrip("/") for name in re.findall(r"`([\w/.]+)`", row)] for row in rows]


def _imports(path: Path, package: list[str]) -> set[str]:
    """Top-level `videorft_hf` units that `path` imports, lazily or not."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package[: len(package) - node.level + 1]
            names = [*base, *node.module.split(".")] if node.module else None
            found |= {(names or [*base, alias.name])[0] for alias in node.names} if not node.module else {names[0]}
        elif node.module and node.module.startswith("videorft_hf."):
            found.add(node.module.split(".")[1])
    return found


def test_the_layout_table_lists_every_module_in_import_order():
    """Each unit of `src/videorft_hf/` imports only units listed above it in the README's layout (the commands,
    `scripts/` and `demo.py`, excepted: they call each other)."""
    source = REPO / "src" / "videorft_hf"
    units = _layout_units()
    position = {unit: i for i, row in enumerate(units) for unit in row}
    on_disk = {p.stem for p in source.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in source.iterdir() if (p / "__init__.py").is_file()
    }
    assert on_disk - set(position) == set(), "modules missing from the README's layout table"
    later = []
    for path in source.rglob("*.py"):
        parts = list(path.relative_to(source).with_suffix("").parts)
        package = parts[:-1] if parts[-1] != "__init__" else parts
        unit = parts[0]
        if unit == "__init__":
            continue
        for imported in _imports(path, package) - {unit}:
            if imported in position and position[imported] > position[unit] and {unit, imported} != {"scripts", "demo"}:
                later.append(f"{path.relative_to(source)} imports {imported}")
    assert not later, later
