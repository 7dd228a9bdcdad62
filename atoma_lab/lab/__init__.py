"""What experiments use: the network builder (in-process or HTTP), attacks, load, measurements
and the notebooks' helpers (:mod:`atoma_lab.lab.notebook`)."""

from atoma_lab.lab.network import Network, build_network

__all__ = ["Network", "build_network"]
