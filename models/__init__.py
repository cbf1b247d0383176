"""Torch models, training and evaluation."""
