"""The evaluate stage: test-split metrics, baselines, runtimes, long reviews and held-out real reviews."""
