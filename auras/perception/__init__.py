"""Perception models and their contract (see base.py)."""
