"""`evaluate` metric modules shipped with videorft_hf (each folder loads with `evaluate.load(<folder path>)`)."""
