"""The `videorft` console command: dispatch, help and `videorft env`."""

import shutil
import subprocess
import sys

import pytest

from videorft_hf.cli import COMMANDS, main


def test_env_prints_versions_and_backends(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for needle in ("trl version: 1.16.0", "transformers version:", "Video backends:", "Default video backend:"):
        assert needle in out


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_unknown_command_fails(capsys):
    assert main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err


def test_every_command_module_imports_and_has_main():
    import importlib

    for name, (module, _) in COMMANDS.items():
        assert callable(importlib.import_module(f"videorft_hf.scripts.{module}").main), name


def test_console_script_is_installed():
    exe = shutil.which("videorft") or str(__import__("pathlib").Path(sys.executable).parent / "videorft")
    result = subprocess.run([exe, "env"], capture_output=True, text=True, timeout=120)
    if result.returncode != 0 and "No such file" in result.stderr:
        pytest.fail("the `videorft` console script is not installed: pip install -e .")
    assert result.returncode == 0 and "trl version" in result.stdout
