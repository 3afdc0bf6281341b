"""Behaviour cloning of learned policies (``auras train``) and their closed-loop evaluation."""
