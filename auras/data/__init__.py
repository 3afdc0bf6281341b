"""Demonstration datasets (Zarr, Diffusion Policy ReplayBuffer layout) and collection."""
