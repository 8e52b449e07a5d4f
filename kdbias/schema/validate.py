"""Checking a summary's values: numbers finite and in range, strings from allow-lists."""

from __future__ import annotations

import math
import re
from typing import Any

from kdbias.schema.record import DISTILL_TOKENS, MIXES, SCHEMA_VERSION, SELECTIONS, MethodRecord, Summary

__all__ = ["finite", "validate_method", "validate_summary"]


def finite(value: object) -> float | None:
    """``value`` as a float when it is a finite real number (``bool`` is not; an integer too
    large for a float is not), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _show(value: object) -> str:
    """``repr(value)`` for a message, at most 40 characters."""
    try:
        text = repr(value)
    except ValueError:  # an integer beyond Python's digit limit
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 40 else text[:37] + "..."


def _count(value: object) -> int | None:
    """A non-negative integer below 2**53, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        return None
    return value


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]{0,127}$")  # experiment, dataset, arch, teacher names
SIGNATURE = re.compile(r"^[0-9a-f]{8,64}$")
RELATIVE_PATH = re.compile(r"^(?!/)(?!.*\.\.)[A-Za-z0-9_./\-]{1,255}$")
LOSSES = ("ce", "soft_kl", "cka")
REPRESENTATIONS = ("image", "token")
PRECISIONS = re.compile(r"^(16|32|64|bf16|transformer-engine)(-(true|mixed))?$|^(16|32|64)$")


def validate_method(method: Any) -> tuple[MethodRecord | None, str | None]:
    """``(method, None)`` when every recorded parameter is of the allowed kind and range,
    else ``(None, why)``: a run whose method does not validate is never averaged."""
    if not isinstance(method, dict):
        return None, "method is not a JSON object"
    loss = method.get("loss")
    if loss not in LOSSES:
        return None, f"method.loss {_show(loss)} is not one of {LOSSES}"
    ranges = {
        "ce_weight": (0.0, 1.0),
        "alpha": (0.0, 1.0),
        "temperature": (1e-6, 1e6),
        "lambda_cka": (0.0, 1e6),
        "lambda_tok": (0.0, 1e6),
    }
    for key, (low, high) in ranges.items():
        if key in method and method[key] is not None:
            x = finite(method[key])
            if x is None or not low <= x <= high:
                return None, f"method.{key}={_show(method[key])} is not a number in [{low:g}, {high:g}]"
    for key in ("batch_size", "global_batch_size", "epochs", "holdout", "teacher_image_size"):
        if key in method and method[key] is not None and _count(method[key]) is None:
            return None, f"method.{key}={_show(method[key])} is not a non-negative integer"
    checks = (
        ("arch", lambda v: isinstance(v, str) and NAME.match(v)),
        ("precision", lambda v: isinstance(v, str) and PRECISIONS.match(v)),
        ("distill_token", lambda v: v in DISTILL_TOKENS),
        ("cka_representation", lambda v: v in REPRESENTATIONS),
        ("unbiased_cka", lambda v: isinstance(v, bool)),
        ("mix", lambda v: v in MIXES),
        ("layer_pairs", _pairs),
    )
    for key, ok in checks:
        if key in method and method[key] is not None and not ok(method[key]):
            return None, f"method.{key}={_show(method[key])} is not an allowed value"
    known = set(MethodRecord.__annotations__)
    return {k: v for k, v in method.items() if k in known}, None  # type: ignore[return-value]


def _pairs(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(p, list) and len(p) == 2 and all(_count(i) is not None and i < 1000 for i in p) for p in value
    )


FRACTIONS = ("val_acc", "best_val_acc", "test_acc_last", "teacher_acc", "teacher_knn_acc")
COUNTS = (
    "epochs_completed",
    "best_epoch",
    "val_images",
    "test_images",
    "teacher_knn_images",
    "hessian_trace_probes",
    "hessian_top_eig_iterations",
    "hessian_top_eig_starts",
)
NON_NEGATIVE = (
    "train_time_s",
    "analytics_time_s",
    "hessian_trace_stderr",
    "hessian_top_eig_residual",
    "hessian_top_eig_spread",
    "test_loss",
)
NUMBERS = ("hessian_trace", "hessian_top_eig", "gen_gap_loss", "hessian_trace_t")  # any sign
CKA_FIGURES = ("diag", "off_diag", "contrast", "trained", "untrained_contrast", "untrained_diag")
CKA_FIGURES += tuple(f"floor_{figure}" for figure in CKA_FIGURES)  # each figure's permutation floor


def validate_summary(summary: dict[str, Any], experiment: str) -> tuple[Summary | None, str | None, list[str]]:
    """Validate one complete summary found in ``<runs>/<experiment>/``:
    ``(cleaned, reason_skipped, dropped_fields)``.

    Skipped (``cleaned`` ``None``): status not ``"complete"``; a ``schema`` newer than
    :data:`SCHEMA_VERSION`; an experiment other than the folder's; a ``dataset`` / ``preset``
    that is not a plain name; no integer seed; a ``test_acc`` that is not in [0, 1]; a
    ``method`` that does not validate (:func:`validate_method`). Dropped (each listed as
    ``"key=value (why)"``): any other field of the wrong kind or range; fields that are not
    part of :class:`Summary` are left out silently. Strings that are kept are names from an
    allow-list pattern or free text that the report escapes.
    """
    if summary.get("status") != "complete":
        return None, f"status {_show(summary.get('status'))}, not 'complete' (the run has not been tested)", []
    version = summary.get("schema", 0)
    if _count(version) is None or version > SCHEMA_VERSION:
        return None, f"schema {_show(version)} is not one this kdbias reads (0..{SCHEMA_VERSION})", []
    named = summary.get("experiment")
    if named is not None and named != experiment:
        return None, f"its experiment {_show(named)} is not the folder's {experiment!r}", []
    for key in ("dataset", "preset"):
        value = summary.get(key)
        if not isinstance(value, str) or not NAME.match(value):
            return None, f"no valid {key} (got {_show(value)})", []
    seed = _count(summary.get("seed"))
    if seed is None:
        return (
            None,
            f"no integer seed (got {_show(summary.get('seed'))}): it cannot be paired with another run",
            [],
        )
    test_acc = summary.get("test_acc")
    if test_acc is not None and ((x := finite(test_acc)) is None or not 0.0 <= x <= 1.0):
        return None, f"test_acc={_show(test_acc)} is not a number in [0, 1]: the accuracy itself is bad", []
    method, why = validate_method(summary.get("method", {"loss": None}))
    if method is None and "method" in summary:
        return None, f"its recorded method does not validate ({why})", []
    run: dict[str, Any] = {"schema": version, "experiment": experiment, "seed": seed, "status": "complete"}
    run.update(dataset=summary["dataset"], preset=summary["preset"], test_acc=test_acc)
    if method is not None:
        run["method"] = method
    dropped: list[str] = []

    def take(key: str, ok: bool, why: str, source: dict[str, Any] = summary, target: dict[str, Any] = run) -> None:
        if key not in source or source[key] is None:
            return
        if ok:
            target[key] = source[key]
        else:
            dropped.append(f"{key}={_show(source[key])} ({why})")

    for key in FRACTIONS:
        x = finite(summary.get(key))
        take(key, x is not None and 0.0 <= x <= 1.0, "not a number in [0, 1]")
    x = finite(summary.get("gen_gap_acc"))
    take("gen_gap_acc", x is not None and -1.0 <= x <= 1.0, "not a number in [-1, 1]")
    for key in COUNTS:
        take(key, _count(summary.get(key)) is not None, "not a non-negative integer")
    for key in NON_NEGATIVE:
        x = finite(summary.get(key))
        take(key, x is not None and x >= 0, "not a finite non-negative number")
    for key in NUMBERS:
        take(key, finite(summary.get(key)) is not None, "not a finite number")
    take("hessian_top_eig_converged", isinstance(summary.get("hessian_top_eig_converged"), bool), "not a boolean")
    for key in ("label", "role", "control_of"):
        value = summary.get(key)
        take(key, isinstance(value, str) and len(value) <= 128, "not a short string")
    take("config_signature", isinstance(summary.get("config_signature"), str) and bool(
        SIGNATURE.match(summary["config_signature"])), "not a hexadecimal signature")  # fmt: skip
    take("selection", summary.get("selection") in SELECTIONS, f"not one of {SELECTIONS}")
    for key in ("selected_checkpoint", "test_predictions"):
        value = summary.get(key)
        take(key, isinstance(value, str) and bool(RELATIVE_PATH.match(value)), "not a relative path in the run")
    take("student_init_sha256", isinstance(summary.get("student_init_sha256"), str), "not a string")
    _teacher(summary, run, dropped)
    _attention(summary, run, dropped)
    _cka(summary, run, dropped)
    _fidelity(summary, run, dropped)
    return run, None, dropped  # type: ignore[return-value]


def _fidelity(summary: dict[str, Any], run: dict[str, Any], dropped: list[str]) -> None:
    """``fidelity``: ``{teacher key: {"agreement": [0, 1], "kl": >= 0}}``; bad entries dropped."""
    fidelity = summary.get("fidelity")
    if fidelity is None:
        return
    if not isinstance(fidelity, dict):
        dropped.append("fidelity (not a JSON object)")
        return
    out = {}
    for key, entry in fidelity.items():
        if not isinstance(key, str) or not NAME.match(key) or not isinstance(entry, dict):
            dropped.append(f"fidelity.{str(key)[:40]} (not a JSON object under a teacher name)")
            continue
        agreement, kl = finite(entry.get("agreement")), finite(entry.get("kl"))
        if agreement is None or not 0.0 <= agreement <= 1.0 or kl is None or kl < 0:
            dropped.append(f"fidelity.{key} (agreement not in [0, 1] or kl not a finite number >= 0)")
            continue
        out[key] = {"agreement": agreement, "kl": kl}
    run["fidelity"] = out


def _teacher(summary: dict[str, Any], run: dict[str, Any], dropped: list[str]) -> None:
    teacher = summary.get("teacher")
    if teacher is None:
        run["teacher"] = None
        return
    if not isinstance(teacher, dict):
        dropped.append("teacher (not a JSON object)")
        return
    out: dict[str, Any] = {}
    for key in ("name", "family"):
        value = teacher.get(key)
        if isinstance(value, str) and NAME.match(value):
            out[key] = value
        elif value is not None:
            dropped.append(f"teacher.{key}={_show(value)} (not a plain name)")
    source = teacher.get("source")
    if isinstance(source, str) and len(source) <= 4096:
        out["source"] = source
    run["teacher"] = out


def _attention(summary: dict[str, Any], run: dict[str, Any], dropped: list[str]) -> None:
    means, heads = summary.get("attn_dist"), summary.get("attn_dist_heads")
    if isinstance(means, dict):
        kept = {}
        for layer, value in means.items():
            x = finite(value)
            if layer.isdigit() and len(layer) < 4 and x is not None and x >= 0:
                kept[layer] = x
            else:
                dropped.append(f"attn_dist.{layer[:20]}={_show(value)} (not a finite distance of a numbered layer)")
        run["attn_dist"] = kept
    elif means is not None:
        dropped.append("attn_dist (not a JSON object)")
    if isinstance(heads, dict):
        kept_heads = {}
        for layer, values in heads.items():
            if layer.isdigit() and isinstance(values, list) and all(finite(v) is not None for v in values):
                kept_heads[layer] = [float(v) for v in values]
            else:
                dropped.append(f"attn_dist_heads.{layer[:20]} (not a list of finite numbers)")
        run["attn_dist_heads"] = kept_heads


def _cka(summary: dict[str, Any], run: dict[str, Any], dropped: list[str]) -> None:
    cka = summary.get("cka")
    if cka is None:
        return
    if not isinstance(cka, dict):
        dropped.append("cka (not a JSON object)")
        return
    out = {}
    for key, entry in cka.items():
        if not NAME.match(key) or not isinstance(entry, dict):
            dropped.append(f"cka.{key[:40]} (not a JSON object under an experiment name)")
            continue
        kept: dict[str, Any] = {}
        for figure in CKA_FIGURES:
            if entry.get(figure) is None:
                continue
            if finite(entry[figure]) is None:
                dropped.append(f"cka.{key}.{figure}={_show(entry[figure])} (not a finite number)")
            else:
                kept[figure] = float(entry[figure])
        if isinstance(entry.get("teacher"), str) and NAME.match(entry["teacher"]):
            kept["teacher"] = entry["teacher"]
        if isinstance(entry.get("source"), str) and len(entry["source"]) <= 4096:
            kept["source"] = entry["source"]
        if isinstance(entry.get("heatmap"), str) and RELATIVE_PATH.match(entry["heatmap"]):
            kept["heatmap"] = entry["heatmap"]
        if entry.get("trained_pairs") is not None and _pairs(entry["trained_pairs"]):
            kept["trained_pairs"] = entry["trained_pairs"]
        out[key] = kept
    run["cka"] = out
