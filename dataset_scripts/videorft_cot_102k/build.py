"""Builds VideoRFT-CoT-102K (the SFT set: every record has a `<think>...</think>` `process`) as a Hub-native dataset.

    python dataset_scripts/videorft_cot_102k/build.py --input VideoRFT-CoT-102K.jsonl --output out/VideoRFT-CoT-102K \
        [--shard-rows 100000] [--push-to-hub user/VideoRFT-CoT-102K]

Load the result with `load_videorft_dataset("out/VideoRFT-CoT-102K", media_root=...)`: rows get the SFT target
`process + "\\n" + solution` as trl's prompt-completion `completion` turn.
"""

from pathlib import Path

from videorft_hf.dataset_builder import DatasetSpec, main

SPEC = DatasetSpec(
    name="VideoRFT-CoT-102K",
    card_template=Path(__file__).with_name("README.md"),
    require_process=True,
    pretty_name="VideoRFT-CoT-102K",
    tags=("video", "reasoning", "chain-of-thought", "sft", "videorft"),
)

if __name__ == "__main__":
    raise SystemExit(main(SPEC))
