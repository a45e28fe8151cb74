"""Federated learning: pure algorithms, partitioners, and engines (in-process, Flower)."""
