"""Every command in the README exists and its arguments parse; the tiny-model tests run the same commands for real.

The commands that need a GPU and the real checkpoints (the paper's recipes) are parsed, not run: parsing checks
the recipe files, the flags and the script entry points a user would type.
"""

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
