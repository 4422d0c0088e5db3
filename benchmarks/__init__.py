"""Reproducible performance and detection harnesses; each prints ratios against a baseline
measured in the same run. Results and the commands that made them: BENCHMARKS.md."""
