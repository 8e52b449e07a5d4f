"""Per-image fidelity of a student to its teachers: ``<run>/fidelity_per_image.npz``.

NumPy ``.npz``, no pickled object (written by :class:`~kdbias.callbacks.fidelity.FidelityCallback`,
read with :func:`read_fidelity_images`): for each teacher key ``k``, ``agreement.<k>`` bool ``[N]``
and ``kl.<k>`` float64 ``[N]`` (nats), in the order of the official test split (position 0..N-1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdbias.schema.files import UnreadableFile, load_npz, read_regular_file

__all__ = ["FIDELITY_FILE", "MAX_FIDELITY_BYTES", "read_fidelity_images"]

FIDELITY_FILE = "fidelity_per_image.npz"
MAX_FIDELITY_BYTES = 64 * 1024 * 1024


def read_fidelity_images(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """``{key: {"agreement": bool [N], "kl": float64 [N]}}`` of a per-image fidelity file: a
    regular file of at most 64 MiB, loaded with ``allow_pickle=False``; every array 1-D of one
    length, ``kl`` finite and >= 0. :class:`UnreadableFile` naming the cause otherwise."""
    raw = read_regular_file(path, MAX_FIDELITY_BYTES)
    arrays = load_npz(raw)  # decompressed size capped before reading
    out: dict[str, dict[str, np.ndarray]] = {}
    lengths = set()
    for name, array in arrays.items():
        kind, _, key = name.partition(".")
        if kind not in ("agreement", "kl") or not key or array.ndim != 1:
            raise UnreadableFile(f"unexpected array {name!r} (agreement.<key> / kl.<key>, 1-D)")
        if kind == "kl" and (array.dtype.kind != "f" or not np.all(np.isfinite(array)) or np.any(array < 0)):
            raise UnreadableFile(f"{name!r} is not finite KL values >= 0")
        if kind == "agreement" and array.dtype != np.bool_:
            raise UnreadableFile(f"{name!r} is not a boolean array")
        lengths.add(len(array))
        out.setdefault(key, {})[kind] = array.astype(np.float64) if kind == "kl" else array
    if len(lengths) > 1 or any(len(v) != 2 for v in out.values()):
        raise UnreadableFile("the arrays differ in length, or a key lacks its agreement or kl")
    return out
