"""Vanilla training (VT): cross-entropy alone, no teacher; the baseline (loss: losses/ce.py)."""
from trainables.methods import declare_method

declare_method("vt", baseline=True, loss="trainables.losses.ce")  # its term: cross-entropy alone
