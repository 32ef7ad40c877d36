"""Entry points; each runs as `python -m videorft_hf.scripts.<command>` (also under `accelerate launch`)."""
