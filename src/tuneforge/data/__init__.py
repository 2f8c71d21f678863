"""Load, validate, clean, deduplicate, split and format training data."""
