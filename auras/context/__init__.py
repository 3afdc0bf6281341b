"""The public-context store (versioned, double-buffered, one writer per key); see store.py."""
