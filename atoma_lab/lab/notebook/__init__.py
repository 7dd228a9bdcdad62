"""What the notebooks compute, so that they only orchestrate and show (ARCHITECTURE.md,
"Notebooks"), by topic:

* :mod:`.wire`: byte previews, a wire message field by field, what each service saw;
* :mod:`.figures`: stage timings in coarse groups for stacked bars, and saving figures;
* :mod:`.vectors`: agreement of two sets of vectors, synthetic inputs, size labels;
* :mod:`.ledger`: the ledger's books by route;
* :mod:`.negative`: crafted bad requests and the status, code and charge each got;
* :mod:`.sdk`: the official atoma-sdk in its own interpreter against an HTTP network.
"""

from atoma_lab.lab.notebook.figures import (
    FIGURES_ENV,
    STAGE_GROUPS,
    grouped_stages,
    save_figure,
    stage_group,
    stage_medians,
)
from atoma_lab.lab.notebook.ledger import (
    ledger_summary,
)
from atoma_lab.lab.notebook.negative import (
    CONFIDENTIAL_PATH,
    NEGATIVE_CASES,
    PLAIN_PATH,
    CaseKit,
    NegativeCase,
    error_of,
    flip_b64,
    negative_matrix,
)
from atoma_lab.lab.notebook.sdk import (
    SDK_ROUNDTRIP_SCRIPT,
    repo_root,
    sdk_python,
    sdk_roundtrip,
)
from atoma_lab.lab.notebook.vectors import (
    agreement,
    rowwise_cosine,
    size_label,
    synthetic_texts,
)
from atoma_lab.lab.notebook.wire import (
    BINARY_FIELDS,
    captured_rows,
    preview,
    reveals,
    shorten,
    wire_fields,
)

__all__ = [
    "BINARY_FIELDS",
    "CONFIDENTIAL_PATH",
    "FIGURES_ENV",
    "NEGATIVE_CASES",
    "PLAIN_PATH",
    "SDK_ROUNDTRIP_SCRIPT",
    "STAGE_GROUPS",
    "CaseKit",
    "NegativeCase",
    "agreement",
    "captured_rows",
    "error_of",
    "flip_b64",
    "grouped_stages",
    "ledger_summary",
    "negative_matrix",
    "preview",
    "repo_root",
    "reveals",
    "rowwise_cosine",
    "save_figure",
    "sdk_python",
    "sdk_roundtrip",
    "shorten",
    "size_label",
    "stage_group",
    "stage_medians",
    "synthetic_texts",
    "wire_fields",
]
