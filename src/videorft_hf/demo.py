"""`videorft demo`: the whole VideoRFT recipe on a laptop CPU in minutes, through the commands a GPU user runs.

1. generate VideoRFT-mini (real H.264 clips of coloured shapes, all five problem types, CoT / RL / held-out splits,
   built into the Hub-native layout by the dataset builder);
2. build a tiny Qwen2.5-VL and a tiny SigLIP from scratch (random weights, offline);
3. `videorft eval` the untrained model on the held-out split;
4. `videorft sft --config recipes/tiny/sft.yaml` on the CoT split, then evaluate;
5. `videorft grpo --config recipes/tiny/grpo.yaml` on the RL split with the format, accuracy, semantic-consistency
   and length-control rewards, then evaluate;
6. `videorft push model ... --dry-run`: the repository folder with its card and the evaluation results;
7. print held-out accuracy per problem type for each stage, check the learning targets, and plot the reward curves
   and the accuracy per stage (PNG).

    videorft demo                       # or: make demo
    videorft demo --quick               # a shortened run (the tests use it)

Each training and evaluation stage shows a progress bar with its steps and the time left. The exit status is 1 when
a learning target is missed; the wall time is printed but is no target (it depends on the machine: see
BENCHMARKS.md for the figure on an idle 2-core machine).

Everything is written under `--output_dir` (default `outputs/demo`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("videorft_hf.demo")

REPO_RECIPES = Path(__file__).resolve().parents[2] / "recipes"
# One sampling for every stage: the tiny recipes' 4 frames of 56x56 (see recipes/tiny/*.yaml).
SAMPLING_FLAGS = [
    "--video_sampling_preset", "video-r1-train", "--video_min_frames", "4", "--video_max_frames", "4",
    "--video_min_pixels", "3136", "--video_max_pixels", "3136", "--image_min_pixels", "3136",
    "--image_max_pixels", "3136",
]


@dataclass
class DemoSettings:
    """Sizes of the demo run. `quick()` shrinks them for tests."""

    num_train: int = 480
    num_eval: int = 96
    sft_steps: int = 900
    grpo_steps: int = 60
    seed: int = 0
    extra_sft_flags: list[str] = field(
        default_factory=lambda: ["--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1",
                                 "--learning_rate", "2e-3"]
    )
    # GRPO refines the SFT model: a step 10x smaller than SFT's keeps what SFT learned
    extra_grpo_flags: list[str] = field(default_factory=lambda: ["--learning_rate", "2e-4"])

    @classmethod
    def quick(cls) -> DemoSettings:
        return cls(num_train=64, num_eval=16, sft_steps=8, grpo_steps=4)


class _Progress:
    """Prints one line per stage with the elapsed time, so a newcomer sees where the run is."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def stage(self, text: str) -> None:
        self.done += 1
        print(f"[{self.done}/{self.total} {time.perf_counter() - self.start:6.1f}s] {text}", flush=True)


def _corpus(paths: dict) -> list[str]:
    """Texts the tiny tokenizer learns its BPE merges from: the prompt templates and the training records, so
    that the fixed prompt costs about 150 tokens instead of one token per character."""
    from videorft_hf.prompts import QUESTION_TEMPLATE, TYPE_TEMPLATE, build_prompt_text

    texts = [QUESTION_TEMPLATE, *TYPE_TEMPLATE.values()]
    for split in ("cot", "rl"):
        for line in Path(paths[split]).read_text().splitlines():
            record = json.loads(line)
            texts.append(build_prompt_text(record["problem"], record["problem_type"], record.get("options")))
            texts.append((record.get("process") or "") + "\n" + record["solution"])
    return texts


def _evaluate(model_dir: str, benchmark: str, media_root: str, output_dir: Path) -> dict:
    from videorft_hf.scripts.eval import main as eval_main

    argv = [
        "--model_name_or_path", model_dir, "--benchmarks", f"VideoRFT-mini={benchmark}", "--media_root", media_root,
        "--output_dir", str(output_dir), "--temperature", "0", "--max_new_tokens", "64", "--batch_size", "16",
        *SAMPLING_FLAGS,
    ]
    if eval_main(argv) != 0:
        raise RuntimeError(f"videorft eval failed for {model_dir}")
    results = json.loads((output_dir / "results.json").read_text())
    outputs = []
    for line in (output_dir / "predictions" / "VideoRFT-mini.jsonl").read_text().splitlines():
        if line.strip():
            outputs.append(json.loads(line).get("output") or "")
    from videorft_hf.rewards import format_reward

    summary = results["benchmarks"]["VideoRFT-mini"]
    summary["format_rate"] = sum(format_reward(outputs)) / max(1, len(outputs))
    return summary


def _reward_history(output_dir: Path) -> list[dict]:
    states = sorted(output_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    if not states:
        return []
    return [h for h in json.loads(states[-1].read_text())["log_history"] if "reward" in h]


def _plot(history: list[dict], stages: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = [h["step"] for h in history]
    for key in sorted({k for h in history for k in h if k.startswith("rewards/") and k.endswith("/mean")}):
        if key.count("/") == 2:  # rewards/<name>/mean, not the per-type accuracy breakdown
            left.plot(steps, [h.get(key) for h in history], label=key.split("/")[1])
    for key in sorted({k for h in history for k in h if k.startswith("shaping/")}):  # bonuses within accuracy
        left.plot(steps, [h.get(key) for h in history], label=key, linestyle="--")
    left.plot(steps, [h["reward"] for h in history], label="total", color="black", linewidth=2)
    left.set(title="GRPO rewards", xlabel="step", ylabel="mean reward")
    left.legend(fontsize=8)
    types = sorted({t for s in stages.values() for t in s.get("per_type", {})})
    width = 0.8 / max(1, len(stages))
    for i, (stage, summary) in enumerate(stages.items()):
        values = [summary.get("per_type", {}).get(t, {}).get("score", 0.0) for t in types]
        right.bar([x + i * width for x in range(len(types))], values, width=width, label=stage)
    right.set_xticks([x + width * (len(stages) - 1) / 2 for x in range(len(types))], types, rotation=20, fontsize=8)
    right.set(title="Held-out score per problem type (%)", ylabel="score (%)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_demo(output_dir: str | os.PathLike = "outputs/demo", settings: DemoSettings | None = None,
             recipes_dir: str | os.PathLike | None = None) -> dict:
    """Runs the demo end to end and returns its figures (also written to `<output_dir>/demo_results.json`).

    Args:
        output_dir: where data, models, runs, evaluations, plots and the dry-run repository go.
        settings: sizes of the run (`DemoSettings.quick()` for a shortened one).
        recipes_dir: the `recipes/` folder (default: the one of this checkout).

    Returns:
        `{"stages": {stage: held-out summary}, "targets": {...}, "seconds": ..., "paths": {...}}`.
    """
    from videorft_hf.mini import generate_mini, multiple_choice_chance
    from videorft_hf.scripts.grpo import main as grpo_main
    from videorft_hf.scripts.push import main as push_main
    from videorft_hf.scripts.sft import main as sft_main
    from videorft_hf.testing import save_tiny_siglip, save_tiny_vlm

    settings = settings or DemoSettings()
    recipes = Path(recipes_dir or REPO_RECIPES)
    if not (recipes / "tiny" / "sft.yaml").is_file():
        raise FileNotFoundError(f"{recipes}/tiny/sft.yaml not found: run the demo from a checkout or pass recipes_dir.")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    progress = _Progress(total=9)
    start = time.perf_counter()

    paths = generate_mini(out / "data", num_train=settings.num_train, num_eval=settings.num_eval, seed=settings.seed)
    root = paths["root"]
    progress.stage(f"VideoRFT-mini written to {root} (CoT, RL and held-out splits, Hub-native layout)")
    base = str(save_tiny_vlm(
        "qwen2_5_vl", out / "models" / "tiny-qwen2.5-vl", seed=settings.seed, tokenizer_corpus=_corpus(paths),
    ))
    siglip = str(save_tiny_siglip(out / "models" / "tiny-siglip", seed=settings.seed))
    progress.stage("tiny Qwen2.5-VL and tiny SigLIP built from scratch")

    stages: dict[str, dict] = {}
    stages["untrained"] = _evaluate(base, paths["eval"], root, out / "eval" / "untrained")
    progress.stage(f"untrained model evaluated: {stages['untrained']['score']:.1f}%")

    sft_dir = out / "sft"
    sft_main([
        "--config", str(recipes / "tiny" / "sft.yaml"), "--model_name_or_path", base,
        "--dataset_name", paths["cot_dataset"], "--media_root", root, "--output_dir", str(sft_dir),
        "--max_steps", str(settings.sft_steps), "--save_strategy", "no", "--logging_steps", "20",
        *settings.extra_sft_flags,
    ])
    progress.stage(f"SFT done ({settings.sft_steps} steps)")
    stages["sft"] = _evaluate(str(sft_dir), paths["eval"], root, out / "eval" / "sft")
    progress.stage(f"after SFT: {stages['sft']['score']:.1f}%, format {stages['sft']['format_rate']:.2f}")

    grpo_dir = out / "grpo"
    grpo_main([
        "--config", str(recipes / "tiny" / "grpo.yaml"), "--model_name_or_path", str(sft_dir),
        "--dataset_name", paths["rl_dataset"], "--media_root", root, "--output_dir", str(grpo_dir),
        "--reward_funcs", "format_reward", "accuracy_reward", "semantic_consistency_reward",
        "--semantic_model_name_or_path", siglip, "--max_steps", str(settings.grpo_steps),
        "--save_steps", str(settings.grpo_steps), *settings.extra_grpo_flags,
    ])
    progress.stage(f"GRPO done ({settings.grpo_steps} steps)")
    stages["grpo"] = _evaluate(str(grpo_dir), paths["eval"], root, out / "eval" / "grpo")
    progress.stage(f"after GRPO: {stages['grpo']['score']:.1f}%")

    push_dir = out / "hub-dry-run"
    if push_dir.exists():
        import shutil

        shutil.rmtree(push_dir)
    push_main([
        "model", str(grpo_dir), "--repo-id", "you/VideoRFT-mini-tiny", "--dry-run", "--output-dir", str(push_dir),
        "--eval-results", str(out / "eval" / "grpo" / "results.json"), "--license", "apache-2.0",
    ])
    progress.stage(f"dry-run repository with its card written to {push_dir}")

    history = _reward_history(grpo_dir)
    fifth = max(1, len(history) // 5)
    first = sum(h["reward"] for h in history[:fifth]) / fifth if history else float("nan")
    last = sum(h["reward"] for h in history[-fifth:]) / fifth if history else float("nan")
    mc = stages["grpo"].get("per_type", {}).get("multiple choice", {}).get("score", 0.0) / 100
    chance = multiple_choice_chance(paths["eval"])  # 2- and 4-option questions mixed
    targets = {
        "format_after_sft": {"value": stages["sft"]["format_rate"], "target": ">= 0.9",
                             "met": stages["sft"]["format_rate"] >= 0.9},
        "multiple_choice_after_grpo": {"value": mc, "target": f">= {2 * chance:.3f} (2x chance)",
                                       "met": mc >= 2 * chance},
        "grpo_reward_last_vs_first_fifth": {"value": [first, last], "target": "last > first", "met": last > first},
    }
    seconds = time.perf_counter() - start  # reported, not a target: the wall time depends on the machine
    plot = out / "demo.png"
    _plot(history, stages, plot)
    progress.stage(f"plots written to {plot}")

    result = {"stages": stages, "targets": targets, "seconds": seconds, "versions": library_versions(),
              "paths": {"plot": str(plot), "push": str(push_dir), "data": root}}
    (out / "demo_results.json").write_text(json.dumps(result, indent=2))
    print(format_table(result))
    return result


# The libraries whose releases can change the demo's scores, in the order the table states them.
MEASURED_WITH = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")


def library_versions() -> dict[str, str]:
    """The versions of `MEASURED_WITH` that a run used: the figures hold for these."""
    import importlib.metadata

    versions = {}
    for name in MEASURED_WITH:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def format_table(result: dict) -> str:
    """The held-out score per problem type for each stage, and the learning targets, as markdown."""
    stages = result["stages"]
    types = sorted({t for s in stages.values() for t in s.get("per_type", {})})
    lines = ["", "| held-out | " + " | ".join(stages) + " |", "|---|" + "---|" * len(stages)]
    lines.append("| all (%) | " + " | ".join(f"{s['score']:.1f}" for s in stages.values()) + " |")
    for t in types:
        cells = [s.get("per_type", {}).get(t, {}).get("score") for s in stages.values()]
        lines.append(f"| {t} (%) | " + " | ".join("-" if c is None else f"{c:.1f}" for c in cells) + " |")
    lines.append("| format rate | " + " | ".join(f"{s['format_rate']:.2f}" for s in stages.values()) + " |")
    lines += ["", "| target | value | goal | met |", "|---|---|---|---|"]
    for name, target in result["targets"].items():
        value = target["value"]
        value = ", ".join(f"{v:.3f}" for v in value) if isinstance(value, list) else f"{value:.3f}"
        lines.append(f"| {name} | {value} | {target['target']} | {'yes' if target['met'] else 'NO'} |")
    if "seconds" in result:
        lines += ["", f"Wall time: {result['seconds'] / 60:.1f} minutes."]
    if result.get("versions"):
        lines += ["", "Measured with " + ", ".join(f"{name} {v}" for name, v in result["versions"].items()) + "."]
    return "\n".join(lines)


def make_parser(subparsers=None, prog: str | None = "videorft demo") -> argparse.ArgumentParser:
    """The parser of `videorft demo`, registered on `subparsers` when given."""
    from .cli import command_parser

    parser = command_parser(subparsers, "demo", prog, __doc__, "The whole recipe end to end on a laptop CPU")
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--quick", action="store_true", help="a shortened run (minutes less; no learning targets)")
    parser.add_argument("--recipes_dir", default=None, help="the recipes/ folder (default: this checkout's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sft_steps", type=int, default=None, help="override the number of SFT steps")
    parser.add_argument("--grpo_steps", type=int, default=None, help="override the number of GRPO steps")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING)
    settings = DemoSettings.quick() if args.quick else DemoSettings()
    settings.seed = args.seed
    settings.sft_steps = args.sft_steps or settings.sft_steps
    settings.grpo_steps = args.grpo_steps or settings.grpo_steps
    result = run_demo(args.output_dir, settings, args.recipes_dir)
    return 0 if args.quick or all(t["met"] for t in result["targets"].values()) else 1


if __name__ == "__main__":
    from videorft_hf.cli import run_command

    sys.exit(run_command(main, sys.argv[1:], "videorft demo"))
