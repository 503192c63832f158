"""Semantic Soft Bootstrapping: distil a model's own hinted solutions into its hint-free behaviour."""

__version__ = "0.1.0"
