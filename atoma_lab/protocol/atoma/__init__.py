"""Atoma's confidential protocol as deployed: its wire messages (:mod:`.messages`) and its
envelope (:mod:`.envelope`), byte for byte (atoma-protocol.md)."""
