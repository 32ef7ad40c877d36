"""The `videorft_accuracy` metric; see `videorft_accuracy.py` (load it with `videorft_hf.evaluation.load_metric()`)."""
