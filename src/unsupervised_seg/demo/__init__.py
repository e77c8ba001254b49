"""The bundled sample, overlays, evaluation metrics and simulated scribbles (for the demo, tests and benchmarks)."""
