"""Training entry points (python -m refinestyle.train.<name>)."""
