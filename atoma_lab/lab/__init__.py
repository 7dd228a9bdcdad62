"""What experiments use: the network builder (in-process, HTTP or Ray), whole corpora on Ray Data
(:func:`~atoma_lab.lab.batch.embed_dataset`), attacks, load, measurements and the notebooks'
helpers (:mod:`atoma_lab.lab.notebook`)."""

from atoma_lab.lab.batch import DatasetEmbedding, DatasetSummary, embed_dataset
from atoma_lab.lab.network import Network, build_network

__all__ = ["DatasetEmbedding", "DatasetSummary", "Network", "build_network", "embed_dataset"]
