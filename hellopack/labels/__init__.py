"""Stored soft labels, FKD's and LPLD's way: the baseline an archive's label payload is measured against.

``record`` (hellopack.labels.record) labels the exact views `hellopack train` draws and writes
them with their augmentation records; ``stored`` trains from such a file
(``train --labels stored:FILE``); ``format`` is the file (spec/LABELS.md) and its exact byte count.
Heavy modules load on use: this package imports nothing at import time.
"""
