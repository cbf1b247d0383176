"""Torch models, training and evaluation."""

import os

# Weights come from installed packages or directories the user gives, never from a hub at run time.
# huggingface_hub reads this once, at its first import, so it is set before any model module loads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
