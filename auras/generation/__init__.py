"""Generation models and their contract (see base.py)."""
