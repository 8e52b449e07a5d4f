"""The formats of the files under a run: ``summary.json`` (its fields, its version, the one
validating reader) and the per-image and snapshot files (:mod:`~kdbias.schema.predictions`,
:mod:`~kdbias.schema.fidelity`, :mod:`~kdbias.schema.snapshots`). Plain Python and NumPy only:
the report reads runs without Lightning.

A run's summary is filled in three places: :class:`~kdbias.callbacks.SummaryCallback`
(identity, held-out figures, times), every callback that is a :class:`SummaryContributor`
(the analytics, through ``summary_items()``), and the runner (method, teacher, test
figures, ``status``). :class:`Summary` lists every field; :data:`SCHEMA_VERSION` is written
as ``schema``. :func:`read_summary_file` and :func:`validate_summary` are what the report
reads with: a file that is not a regular file, is larger than :data:`MAX_SUMMARY_BYTES`,
is not UTF-8 JSON (a 200,000-level nesting included) or is not an object is refused with
the reason; every number is checked finite and in range, every string against an
allow-list; a run whose ``method`` does not validate is refused.

Backward reading: a summary without ``schema`` (written before versioning) is read as
schema 0, with the same checks; a ``schema`` above :data:`SCHEMA_VERSION` is refused (a
newer kdbias wrote it).
"""

from kdbias.schema.files import MAX_SUMMARY_BYTES, UnreadableFile, load_npz, read_regular_file, read_summary_file
from kdbias.schema.record import (
    DISTILL_TOKENS,
    MIXES,
    SCHEMA_VERSION,
    SELECTION_BEST,
    SELECTION_LAST,
    SELECTIONS,
    CKARecord,
    DistillToken,
    MethodRecord,
    Mix,
    Selection,
    Summary,
    SummaryContributor,
    TeacherRecord,
)
from kdbias.schema.validate import finite, validate_method, validate_summary

__all__ = [
    "DISTILL_TOKENS",
    "MIXES",
    "SELECTIONS",
    "SELECTION_BEST",
    "SELECTION_LAST",
    "DistillToken",
    "Mix",
    "Selection",
    "MAX_SUMMARY_BYTES",
    "load_npz",
    "SCHEMA_VERSION",
    "CKARecord",
    "MethodRecord",
    "Summary",
    "SummaryContributor",
    "TeacherRecord",
    "UnreadableFile",
    "finite",
    "read_regular_file",
    "read_summary_file",
    "validate_method",
    "validate_summary",
]
