"""How services reach each other: in-process (with fault injection and capture) or HTTP."""

from atoma_lab.transport.inprocess import CapturedMessage, Fault, InProcessTransport

__all__ = ["CapturedMessage", "Fault", "InProcessTransport"]
