"""The collector-side analyzer service: the same detectors on whole traces."""
