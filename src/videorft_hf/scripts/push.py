"""Publishes a trained checkpoint or a built dataset to the Hugging Face Hub, with its card, in one commit.

    # a checkpoint: full model, LoRA adapter (auto-detected), or the adapter merged into its base (--kind merged)
    videorft push model out/grpo --repo-id you/VideoRFT-7B --eval-results eval/results.json \\
        --license apache-2.0 [--dry-run --output-dir hub/VideoRFT-7B] [--private] [--revision v1]

The card is written from what ran: the run record `videorft sft` / `videorft grpo` save with the checkpoint
(`videorft_run.json`: stage, base model, rewards, sampling, training arguments, steps, hardware) and the adapter's
config. `--recipe` is only for a checkpoint trained without those scripts (no run record); the card then labels its
values as the recipe's. `--eval-results` must be this checkpoint's evaluation (`results.json` records the folder
`videorft eval` evaluated); `--allow-other-model-results` publishes another model's, and the card says whose they are.

    # a dataset folder built by dataset_scripts/<name>/build.py
    videorft push dataset out/VideoRFT-RL-310K --repo-id you/VideoRFT-RL-310K [--dry-run] [--private]

    python -m videorft_hf.scripts.push ...

`--dry-run` writes the exact repository folder and uploads nothing (it works offline). A real push takes the token
from huggingface_hub's usual sources (`HF_TOKEN`, `hf auth login`); there is no token option, so a token never lands
in a shell history or a log.
"""

from __future__ import annotations

import argparse
import logging
import sys

from videorft_hf.run_record import CHECKPOINT_KINDS, DEFAULT_PIPELINE_TAG, STAGES  # no library: --help stays quick


def make_parser(subparsers=None, prog: str | None = "videorft push") -> argparse.ArgumentParser:
    """The parser of `videorft push model|dataset`, registered as `push` on `subparsers` when given."""
    from videorft_hf.cli import command_parser

    parser = command_parser(subparsers, "push", prog, __doc__, "Publish a checkpoint or a built dataset to the Hub")
    commands = parser.add_subparsers(dest="what", required=True, metavar="{model,dataset}")

    def add_common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--repo-id", required=True, help="target repository, such as you/VideoRFT-7B")
        sub.add_argument("--dry-run", action="store_true", help="write the repository folder, upload nothing")
        sub.add_argument("--output-dir", help="dry-run folder, missing or empty (default hub-dry-run/<repo name>)")
        sub.add_argument("--private", action="store_true", help="create the repository as private")
        sub.add_argument("--revision", help="branch to commit to, created if missing (default main)")
        sub.add_argument("--commit-message", help="commit title")

    model = commands.add_parser(
        "model",
        help="a trained checkpoint with its processor and a model card",
        description="Publish a checkpoint; the card states what ran (its videorft_run.json). Example:\n\n"
        "    videorft push model out/grpo --repo-id you/VideoRFT-7B --eval-results eval/results.json --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    model.add_argument("checkpoint", help="checkpoint folder (save_pretrained / trainer output)")
    add_common(model)
    model.add_argument("--kind", choices=CHECKPOINT_KINDS, default="auto", help="what to publish (default auto)")
    model.add_argument("--stage", choices=STAGES, help="training stage (default: the run record's)")
    model.add_argument("--base-model", help="model trained from, for the card (default: the run record's or the adapter's)")
    model.add_argument("--merge-base", help="model to merge the adapter into (--kind merged; default the adapter's)")
    model.add_argument("--processor", help="processor path or Hub id, when the checkpoint folder has none")
    model.add_argument("--dataset", action="append", dest="datasets", help="Hub id of a training dataset (repeat)")
    model.add_argument("--recipe", help="recipe YAML, only for a checkpoint without a run record")
    model.add_argument(
        "--eval-results",
        help="`videorft eval` results JSON, as model-index entries; it must be this checkpoint's evaluation",
    )
    model.add_argument(
        "--allow-other-model-results",
        action="store_true",
        help="publish --eval-results of another model anyway; the card says whose scores they are",
    )
    model.add_argument("--license", help="license id for the card, e.g. apache-2.0")
    model.add_argument("--hardware", help="hardware of the run, for the card, e.g. '8x H100 80GB'")
    model.add_argument("--tag", action="append", dest="tags", default=[], help="extra card tag (repeat)")
    model.add_argument("--pipeline-tag", default=DEFAULT_PIPELINE_TAG, help="the card's pipeline tag")

    dataset = commands.add_parser(
        "dataset",
        help="a dataset folder built by dataset_scripts/ with its card",
        description="Publish a built dataset folder. Example:\n\n"
        "    videorft push dataset build/VideoRFT-RL-310K --repo-id you/VideoRFT-RL-310K --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    dataset.add_argument("folder", help="built dataset folder (parquet shards + README with configs)")
    add_common(dataset)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)  # before the publishing stage (torch) is imported: --help stays quick
    from videorft_hf.hub import push_dataset, push_model

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    common = dict(
        dry_run=args.dry_run,
        output_dir=args.output_dir,
        private=True if args.private else None,
        revision=args.revision,
        commit_message=args.commit_message,
    )
    try:
        if args.what == "model":
            result = push_model(
                args.checkpoint,
                args.repo_id,
                kind=args.kind,
                stage=args.stage,
                base_model=args.base_model,
                merge_base=args.merge_base,
                processor=args.processor,
                datasets=args.datasets,
                recipe=args.recipe,
                eval_results=args.eval_results,
                allow_other_model_results=args.allow_other_model_results,
                license=args.license,
                hardware=args.hardware,
                tags=args.tags,
                pipeline_tag=args.pipeline_tag,
                **common,
            )
        else:
            result = push_dataset(args.folder, args.repo_id, **common)
    except FileExistsError as error:  # a dry-run folder that is not empty
        print(f"videorft push: error: {error}", file=sys.stderr)
        return 1
    for path in result.files:
        print(f"  {path}")
    if result.folder is not None:
        print(f"Dry run: wrote {len(result.files)} files to {result.folder}; nothing was uploaded.")
    else:
        print(f"Pushed {len(result.files)} files to {result.repo_id} in one commit: {result.commit_url}")
    return 0


if __name__ == "__main__":
    from videorft_hf.cli import run_command

    sys.exit(run_command(main, sys.argv[1:], "videorft push"))
