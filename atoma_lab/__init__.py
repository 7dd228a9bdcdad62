"""atoma-lab: a research toolkit for confidential embeddings, wire-compatible with Atoma."""
__version__ = "0.1.0"
