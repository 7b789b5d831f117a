"""Bundled data files (the handwritten digits)."""
