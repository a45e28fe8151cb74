"""Compression techniques: quantize/, prune/, distill/, cluster/, lowrank/ — each a set of passes."""
