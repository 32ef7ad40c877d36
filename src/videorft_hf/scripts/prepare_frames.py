"""`videorft prepare-frames`: sample every video of a dataset once and keep the frames in a frame store.

Each video is decoded at the sampling preset (and overrides) that training or evaluation will use, and its frames are
stored at their target size, keyed by media path, file identity and sampling config (see `videorft_hf.frame_store`).
Resumable: a re-run skips what is stored. Parallel: `--num_workers` decoding processes, one writer. Then point
training, evaluation or anything calling `load_video_frames` at the store; a video missing from it is decoded.

    # on the data `videorft demo` writes (outputs/demo/data), from a checkout (for recipes/):
    # the frames GRPO will read: its recipe gives the same sampling config (the recipe's other keys are ignored)
    videorft prepare-frames --config recipes/tiny/grpo.yaml --dataset_name outputs/demo/data/hub/VideoRFT-mini-RL \\
        --media_root outputs/demo/data --store frames/ --num_workers 2
    # a dataset folder and an eval file, 32 frames at 256*28*28, JPEG (a fraction of the bytes)
    videorft prepare-frames --dataset_name outputs/demo/data/hub/VideoRFT-mini-RL outputs/demo/data/eval.jsonl \\
        --media_root outputs/demo/data --video_sampling_preset videorft-eval --store frames-eval/ --mode lossy
    # then read it (also: videorft eval), or make it the default --frame_store of every videorft command
    videorft grpo --config recipes/tiny/grpo.yaml --frame_store frames/ ...
    export VIDEORFT_FRAME_STORE=$PWD/frames
    python -m videorft_hf.scripts.prepare_frames --help

It prints a JSON summary: videos, stored, present (skipped), failed (each with its error), seconds.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field

from videorft_hf.configs import VideoSamplingArguments
from videorft_hf.scripts.arguments import VideoRFTParser


@dataclass
class PrepareFramesArguments(VideoSamplingArguments):
    """What `videorft prepare-frames` reads: the datasets, the store, and the sampling fields of training."""

    store: str | None = field(
        default=None,
        metadata={
            "help": "Frame store folder (created when missing); defaults to --frame_store (and so to "
            "$VIDEORFT_FRAME_STORE). Then pass it to training and evaluation as --frame_store."
        },
    )
    dataset_name: list[str] = field(
        default_factory=list,
        metadata={"help": "Datasets whose videos are prepared: Hub-native folders, release JSONL / JSON files."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Subset of a Hub-native dataset."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to read."})
    media_root: str | None = field(
        default=None, metadata={"help": "Folder the records' `./` media paths are relative to (as in training)."}
    )
    videos: list[str] = field(default_factory=list, metadata={"help": "Video files to prepare as well."})
    mode: str | None = field(
        default=None,
        metadata={
            "help": "Store mode when the store is created: 'lossless' (PNG, the default), 'raw' (uncompressed uint8, "
            "fastest) or 'lossy' (JPEG quality 90). An existing store keeps its mode."
        },
    )
    num_workers: int = field(default=2, metadata={"help": "Decoding processes (0: decode in this process)."})

    def __post_init__(self):
        # The store being prepared need not exist yet: `frame_store` (a training recipe's, or the environment's)
        # only names it here, and is not opened for reading.
        if not self.store:
            self.store = self.frame_store
        self.frame_store = None
        super().__post_init__()
        if isinstance(self.dataset_name, str):  # a training recipe gives one dataset as a string
            self.dataset_name = [self.dataset_name]
        if not self.store:
            raise ValueError("--store is required: the folder to keep the frames in.")
        if not self.dataset_name and not self.videos:
            raise ValueError("Nothing to prepare: give --dataset_name (datasets) and/or --videos (files).")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}.")


def make_parser(subparsers=None, prog: str | None = "videorft prepare-frames"):
    """Returns the `VideoRFTParser` (a trl `TrlParser`) for `PrepareFramesArguments` (`--config file.yaml` sets them, flags override).

    Example:
        >>> (args,) = make_parser().parse_args_and_config(["--store", "frames", "--videos", "a.mp4"])
        >>> args.video_sampling_preset, args.num_workers
        ('videorft-train', 2)
    """
    return VideoRFTParser.for_command(
        subparsers, "prepare-frames", (PrepareFramesArguments,), prog, __doc__, "Prepare a frame store"
    )


def dataset_videos(args: PrepareFramesArguments) -> list[str]:
    """The unique video paths of the datasets named in `args` (image rows are left out), then `args.videos`."""
    from videorft_hf.data import load_videorft_dataset

    videos: dict[str, None] = {}
    for name in args.dataset_name:
        dataset = load_videorft_dataset(
            name, args.dataset_config, args.dataset_train_split, media_root=args.media_root, on_invalid="skip"
        )
        videos.update((video, None) for video in dataset["video"] if video)
    videos.update((video, None) for video in args.videos)
    return list(videos)


def main(argv: list[str] | None = None) -> int:
    """Runs `videorft prepare-frames` with `argv` (default: the command line) and prints the summary."""
    from videorft_hf.frame_store import prepare_frames

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    # Unknown keys of a --config file are ignored, so a training or evaluation recipe can be passed as it is.
    (args,) = make_parser().parse_args_and_config(argv, fail_with_unknown_args=False)
    summary = prepare_frames(
        dataset_videos(args),
        args.store,
        args.sampling_config(),
        mode=args.mode,
        num_workers=args.num_workers,
        backend=args.video_backend,
    )
    print(json.dumps(summary, indent=2))
    if summary["failed"]:
        print(f"{len(summary['failed'])} videos failed to decode (listed above); they fail the same way when read.")
    print(f"Use it: --frame_store {summary['store']} (or export VIDEORFT_FRAME_STORE={summary['store']})")
    return 0


if __name__ == "__main__":
    from videorft_hf.cli import run_command

    sys.exit(run_command(main, sys.argv[1:], "videorft prepare-frames"))
