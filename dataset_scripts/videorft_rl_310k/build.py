"""Builds VideoRFT-RL-310K (the GRPO set: records without `process`) as a Hub-native dataset.

    python dataset_scripts/videorft_rl_310k/build.py --input VideoRFT-RL-310K.jsonl --output out/VideoRFT-RL-310K \
        [--shard-rows 100000] [--push-to-hub user/VideoRFT-RL-310K]

Load the result with `load_videorft_dataset("out/VideoRFT-RL-310K", media_root=...)` or plain
`datasets.load_dataset("out/VideoRFT-RL-310K")`.
"""

from pathlib import Path

from videorft_hf.dataset_builder import DatasetSpec, main

SPEC = DatasetSpec(
    name="VideoRFT-RL-310K",
    card_template=Path(__file__).with_name("README.md"),
    require_process=False,
    pretty_name="VideoRFT-RL-310K",
    tags=("video", "reasoning", "reinforcement-learning", "grpo", "videorft"),
)

if __name__ == "__main__":
    raise SystemExit(main(SPEC))
