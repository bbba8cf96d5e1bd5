"""Training: the fit/evaluate loop, checkpoints and resume."""

from textbatch.training.loop import evaluate, fit

__all__ = ["evaluate", "fit"]
