"""The benchmark: runner (episodes, streams), metrics, reports."""
