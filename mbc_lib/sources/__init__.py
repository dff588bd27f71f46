"""Reading source trees: the one walker and file classifier, DICOM reads, the pixel budget.

``mbc deid``, ``mbc ingest`` and the PHI gate all see a source tree through this package, so a
rule about what counts as a file (links are never followed, special files are refused, every
entry is accounted for) holds everywhere.
"""

from .walk import Entry, walk_tree

__all__ = ["Entry", "walk_tree"]
