"""How atoma-lab's objects show themselves in a notebook: one look for every ``_repr_html_``
(:mod:`.html`), DataFrames on request (:mod:`.frames`, pandas imported only when asked) and
progress bars on long work (:mod:`.progressbar`, ``tqdm.auto``, silent where it should be).

The lowest layer beside ``errors`` and ``encoding``: the wire models of the pure protocol layer
render themselves with :mod:`.html`, which does no I/O and imports nothing heavy. Importing this
package imports none of pandas or tqdm.
"""

from atoma_lab.display.frames import to_frame
from atoma_lab.display.html import bars, esc, fingerprint, kv_table, section, table
from atoma_lab.display.progressbar import progress, progress_disabled

__all__ = [
    "bars",
    "esc",
    "fingerprint",
    "kv_table",
    "progress",
    "progress_disabled",
    "section",
    "table",
    "to_frame",
]
