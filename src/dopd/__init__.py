"""DOPD: Dual On-policy Distillation for LLMs and VLMs."""

__version__ = "0.1.0"
