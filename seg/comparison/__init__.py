"""The comparison runner (``seg-compare``): its config, the run-folder layout, the runner, the report and its statistics."""
