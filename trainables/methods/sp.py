"""Similarity-preserving KD (Tung & Mori 2019): no options of its own beyond the common lambda (loss: losses/sp.py)."""
from trainables.methods import declare_method

declare_method("sp", unlabeled_rows=True, ablatable=("lam",))  # features only: labels unused
