"""Detection-quality harnesses: labelled synthetic data through the real detectors and monitors, so
alert rates, recall and delays are measured, not guessed. Results: BENCHMARKS.md."""
