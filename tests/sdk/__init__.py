"""Interoperability with the official atoma-sdk, run in its own virtual environment."""
