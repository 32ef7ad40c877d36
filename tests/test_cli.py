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


# ------------------------------------------------------------------------------------------------ help and flags
def _help(argv: list[str], capsys) -> str:
    """What `videorft <argv> --help` prints, through the shipped help (returns 0) or argparse (exits 0)."""
    try:
        assert main(argv) == 0
    except SystemExit as exit_info:
        assert exit_info.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", ["sft", "grpo", "eval", "curate", "prepare-frames"])
def test_help_has_a_description_an_example_and_the_package_options_first(command, capsys):
    out = _help([command, "--help"], capsys)
    assert out.startswith(f"usage: videorft {command} [--config RECIPE.yaml]")
    assert f"\n`videorft {command}`" in out or "\nStage two of VideoRFT" in out  # the module's description
    assert f"    videorft {command} --" in out  # an example
    # --config is explained first: right after the usage line, before the description and every option
    assert out.split("\n\n")[1].startswith("--config RECIPE.yaml sets any option")
    groups = [line for line in out.splitlines() if line.endswith(" options:")]
    assert groups[0] == "VideoRFT options:", groups
    assert "Show a progress bar" not in "\n".join(  # `--no_<flag>` turns the flag off
        line for line in out.splitlines() if line.strip().startswith("--no_")
    )


def test_a_misspelled_or_abbreviated_flag_names_the_nearest_in_two_lines(capsys):
    for typo, nearest in (("--num_generation", "--num_generations"), ("--max_step", "--max_steps")):
        with pytest.raises(SystemExit) as exit_info:
            main(["grpo", typo, "4"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"videorft grpo: error: unknown flag {typo}; did you mean {nearest}?" in err
        assert len(err.splitlines()) == 3  # usage, error, where to look: not the usage of every option


def test_a_misspelled_recipe_key_names_the_nearest_key(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("num_generation: 4\nlearning_rate: 1.0e-6\n")
    with pytest.raises(SystemExit):
        main(["grpo", "--config", str(recipe)])
    err = capsys.readouterr().err
    assert f"unknown key in the recipe file {recipe}: 'num_generation' (did you mean 'num_generations'?)" in err
    assert "fail_with_unknown_args" not in err
    with pytest.raises(SystemExit):
        main(["grpo", "--config", str(tmp_path / "nope.yaml")])
    assert f"the recipe file {tmp_path / 'nope.yaml'} does not exist" in capsys.readouterr().err


def test_no_command_prints_the_bitsandbytes_kernel_note():
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "videorft_hf.cli", "grpo", "--help"], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0 and "VideoRFT options:" in result.stdout
    assert "gemm_4bit" not in result.stderr + result.stdout and "kernels-community" not in result.stderr


def test_every_command_has_make_parser_with_subparsers():
    """`make_parser(subparsers=None)` in every command, as in trl's scripts: standalone, or registered on a CLI."""
    import argparse
    import importlib

    from trl import TrlParser

    top = argparse.ArgumentParser(prog="cli")
    subparsers = top.add_subparsers(dest="command", parser_class=TrlParser)
    for name, (module, _) in COMMANDS.items():
        make_parser = importlib.import_module(f"videorft_hf.scripts.{module}").make_parser
        assert isinstance(make_parser(), argparse.ArgumentParser), name
        make_parser(subparsers)
    assert set(subparsers.choices) == set(COMMANDS)
    (args,) = subparsers.choices["eval"].parse_args_and_config(["--benchmarks", "b.json"])
    assert args.benchmarks == ["b.json"]


def test_one_resume_rule_for_sft_and_grpo(tmp_path):
    from videorft_hf.scripts import grpo, sft
    from videorft_hf.scripts.inputs import ResumeCheckpointError, resolve_checkpoint

    out = tmp_path / "run"
    assert resolve_checkpoint("last", str(out)) is None  # nothing to resume yet: start afresh
    for step in (2, 10):
        (out / f"checkpoint-{step}").mkdir(parents=True)
    newest = str(out / "checkpoint-10")
    assert [resolve_checkpoint(word, str(out)) for word in ("last", "latest", "auto", "true", True)] == [newest] * 5
    assert resolve_checkpoint(str(out / "checkpoint-2"), str(out)) == str(out / "checkpoint-2")
    assert resolve_checkpoint(None, str(out)) is None and resolve_checkpoint("", str(out)) is None
    with pytest.raises(ResumeCheckpointError, match="'lastest' is not a folder.*'last'"):
        resolve_checkpoint("lastest", str(out))
    assert sft.resolve_checkpoint is resolve_checkpoint
    for module in (sft, grpo):  # a bad value fails before any dataset or model loads
        script_args, training_args, model_args = module.make_parser().parse_args_and_config(
            ["--dataset_name", str(tmp_path / "missing.jsonl"), "--model_name_or_path", str(tmp_path / "no-model"),
             "--output_dir", str(out), "--use_cpu", "true", "--bf16", "false", "--resume_from_checkpoint", "lastest"]
        )
        with pytest.raises(ResumeCheckpointError):
            module.train(script_args, training_args, model_args)


# ------------------------------------------------------------------------------------------------ quick help
HEAVY_MODULES = ("torch", "transformers", "trl")


def test_help_of_every_command_imports_no_heavy_library():
    """`videorft --help` and `videorft <command> --help` import neither torch nor transformers nor trl (each takes
    seconds): measured in a fresh interpreter, after the package import and after each command's help in turn."""
    code = (
        "import sys\n"
        "import videorft_hf\n"
        "from videorft_hf.cli import COMMANDS, main\n"
        f"heavy = {HEAVY_MODULES!r}\n"
        "print('import', *[m for m in heavy if m in sys.modules])\n"
        "for argv in [['--help']] + [[c, '--help'] for c in COMMANDS] + [['push', 'model', '--help']]:\n"
        "    try:\n"
        "        code = main(argv)\n"
        "    except SystemExit as exit:\n"
        "        code = exit.code\n"
        "    print(' '.join(argv), code, *[m for m in heavy if m in sys.modules], file=sys.stderr)\n"
    )
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1"}
    env.pop("VIDEORFT_FRAME_STORE", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[0] == "import"  # `import videorft_hf` imports none of them
    lines = done.stderr.splitlines()[-(len(COMMANDS) + 2):]
    assert [line.rsplit(" ", 1)[-1] for line in lines] == ["0"] * len(lines), lines  # each help exited 0, no library


def test_the_shipped_help_is_current_and_prints_what_argparse_prints(monkeypatch):
    """The shipped help specs describe this installation (else `make help-specs`), and the text built from each is
    the full parser's help, character for character."""
    import importlib
    import json

    from videorft_hf.scripts import help_cache

    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.delenv("VIDEORFT_FRAME_STORE", raising=False)
    for command, module in help_cache.SPEC_COMMANDS.items():
        shipped = json.loads((help_cache.SPEC_DIR / f"{module}.json").read_text(encoding="utf-8"))
        assert shipped == help_cache.build_spec(command), f"{command}: the shipped help is stale, run make help-specs"
        full = importlib.import_module(f"videorft_hf.scripts.{module}").make_parser().format_help()
        assert help_cache.cached_help(command) == full, command


def test_stale_or_environment_dependent_help_falls_back_to_argparse(monkeypatch, tmp_path, capsys):
    from videorft_hf.scripts import help_cache

    monkeypatch.setenv("VIDEORFT_FRAME_STORE", str(tmp_path))  # the default of --frame_store: not in the spec
    assert help_cache.cached_help("grpo") is None
    monkeypatch.delenv("VIDEORFT_FRAME_STORE")
    assert help_cache.cached_help("grpo") is not None
    monkeypatch.setattr(help_cache, "LIBRARIES", ("trl", "transformers", "torch"))  # a key that no longer matches
    assert help_cache.cached_help("grpo") is None
    out = _help(["grpo", "--help"], capsys)  # argparse's help then
    assert out.startswith("usage: videorft grpo [--config RECIPE.yaml]") and "VideoRFT options:" in out
    assert help_cache.cached_help("push") is None and help_cache.cached_help("nope") is None


def test_prepare_frames_help_examples_run(tmp_path, monkeypatch, capsys):
    """Every `videorft prepare-frames` example of its help runs as written, on the data `videorft demo` writes, from a
    folder with the checkout's recipes (and the `python -m` one prints the help). One change: `--num_workers 0`, so
    that the videos decode in this process instead of two spawned interpreters that each import torch
    (`tests/test_frame_store.py` runs the workers)."""
    import json
    import os
    import runpy
    import shlex
    from pathlib import Path

    from videorft_hf.mini import generate_mini

    text = _help(["prepare-frames", "--help"], capsys)
    commands, current = [], ""
    for line in text.splitlines():
        line = line.strip()
        if current or line.startswith(("videorft prepare-frames", "python -m videorft_hf.scripts.prepare_frames")):
            current += line.rstrip("\\").strip() + " "
            if not line.endswith("\\"):
                commands.append(current.strip())
                current = ""
    assert len(commands) == 3, commands
    os.symlink(Path(__file__).resolve().parents[1] / "recipes", tmp_path / "recipes")
    generate_mini(tmp_path / "outputs" / "demo" / "data", num_train=4, num_eval=4, seed=0)
    monkeypatch.chdir(tmp_path)
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "python":
            monkeypatch.setattr(sys, "argv", [argv[2], *argv[3:]])
            with pytest.raises(SystemExit) as exit_info:
                runpy.run_module(argv[2], run_name="__main__")
            assert exit_info.value.code == 0, command
            assert "usage: videorft prepare-frames" in capsys.readouterr().out
            continue
        if "--num_workers" in argv:
            argv[argv.index("--num_workers") + 1] = "0"
        assert main(argv[1:]) == 0, command
        summary = json.loads(capsys.readouterr().out.split("\nUse it:")[0])
        assert summary["videos"] > 0 and not summary["failed"], (command, summary)


# ------------------------------------------------------------------------------------------------ the package import
def test_every_public_name_still_imports_from_the_package():
    """`from videorft_hf import X` works for every public name (imported when first used), and is the object its
    module defines."""
    import importlib

    import videorft_hf

    assert set(videorft_hf.__all__) <= set(dir(videorft_hf))
    for name, module in videorft_hf._EXPORTS.items():
        assert getattr(videorft_hf, name) is getattr(importlib.import_module(f"videorft_hf.{module}"), name), name
    from videorft_hf import VideoGRPOTrainer, load_videorft_dataset, push_model  # noqa: F401

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        videorft_hf.nope  # noqa: B018


# ------------------------------------------------------------------------------------------------ the error boundary
def test_run_command_prints_expected_errors_in_one_line_and_keeps_bugs_tracebacks(capsys):
    from videorft_hf.cli import is_expected_error, run_command, take_debug_flag
    from videorft_hf.data import RecordValidationError
    from videorft_hf.hub import HubOfflineError
    from videorft_hf.scripts.arguments import ArgumentValueError

    def raising(error):
        def main(argv):
            raise error
        return main

    bad_row = RecordValidationError("unknown problem type 'multi choice'", 1, "problem_type", "bad.jsonl line 2")
    assert run_command(raising(bad_row), [], "videorft sft") == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("videorft sft: error: RecordValidationError: ") and "bad.jsonl line 2" in err[0]
    assert err[1] == "(run again with --debug to see the traceback)" and len(err) == 2
    assert run_command(raising(ArgumentValueError("x must be > 0 (the recipe file r.yaml sets x: 0)")), [], "p") == 2
    assert capsys.readouterr().err.startswith("p: error: x must be > 0 (the recipe file r.yaml sets x: 0)\n")
    with pytest.raises(RecordValidationError):  # --debug: Python's own traceback
        run_command(raising(bad_row), ["--debug"], "videorft sft")
    with pytest.raises(KeyError):  # a bug is not an expected error
        run_command(raising(KeyError("x")), [], "videorft sft")
    assert is_expected_error(HubOfflineError("offline")) and not is_expected_error(ZeroDivisionError())
    worker = RecordValidationError.__new__(RecordValidationError)
    worker.args = ("Caught RecordValidationError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                   "last):\n  File x\nvideorft_hf.data.RecordValidationError: Row 1, field 'path': missing",)
    from videorft_hf.cli import describe_error

    assert describe_error(worker) == "RecordValidationError: videorft_hf.data.RecordValidationError: Row 1, field 'path': missing"
    # transformers' own `--debug <option>` stays an option; a bare --debug is ours
    assert take_debug_flag(["--debug", "underflow_overflow", "--max_steps", "1"]) == (
        ["--debug", "underflow_overflow", "--max_steps", "1"], False)
    assert take_debug_flag(["--max_steps", "1", "--debug"]) == (["--max_steps", "1"], True)
    assert take_debug_flag(["--debug", "--max_steps", "1"]) == (["--max_steps", "1"], True)


def test_recipe_errors_name_the_recipe_file_in_process(tmp_path, capsys):
    from videorft_hf.scripts import grpo
    from videorft_hf.scripts.arguments import ArgumentValueError

    recipe = tmp_path / "r.yaml"
    recipe.write_text("loss_type: grpo\nnum_generations: 3\n")
    with pytest.raises(ArgumentValueError, match=r"num_generations \(3\).*\(the recipe file .*r.yaml sets "
                                                 r"num_generations: 3\)"):
        grpo.make_parser().parse_args_and_config(["--config", str(recipe), "--use_cpu", "true"])
    with pytest.raises(ArgumentValueError, match=r"the command line sets --num_generations\)"):
        grpo.make_parser().parse_args_and_config(["--num_generations", "3", "--use_cpu", "true"])
    recipe.write_text("max_steps: many\n")
    with pytest.raises(SystemExit):
        grpo.make_parser().parse_args_and_config(["--config", str(recipe)])
    assert f"the recipe file {recipe}: max_steps: 'many' is not a valid int" in capsys.readouterr().err
    argv = ["--config", str(recipe), "--max_steps", "2", "--use_cpu", "true"]  # the flag overrides the bad value
    assert grpo.make_parser().parse_args_and_config(argv)[1].max_steps == 2
    recipe.write_text("lr_scheduler_type: cosine_with_typo\n")
    with pytest.raises(SystemExit):
        grpo.make_parser().parse_args_and_config(["--config", str(recipe)])
    assert "lr_scheduler_type: 'cosine_with_typo' is not one of linear, cosine" in capsys.readouterr().err
    recipe.write_text("learning_rate: 1.0e-5\n  bad indent: [\n")
    with pytest.raises(SystemExit):
        grpo.make_parser().parse_args_and_config(["--config", str(recipe)])
    assert f"the recipe file {recipe} is not valid YAML: " in capsys.readouterr().err
