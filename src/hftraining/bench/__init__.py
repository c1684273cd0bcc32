"""Public benchmarks reproduced under their published protocols (``hftraining.bench.ett``)."""
