"""tuneforge: from raw examples to a fine-tuned, measured, served small language model."""

__version__ = "0.1.0"
