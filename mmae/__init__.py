"""mmae: matrix information theory for self-supervised learning (M-MAE and friends)."""

__version__ = "0.1.0"
