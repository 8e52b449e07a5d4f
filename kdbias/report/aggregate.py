"""Which runs a report uses: one (dataset, preset) pair, one configuration per experiment,
one run per seed; and the statistics over those seeds.

Selection rules (also written into the report):

1. The (dataset, preset) pair asked for, else the pair with the most distinct experiments
   of the registry (ties: ``paper`` first, a CIFAR dataset before ``digits``, then by name).
   The other pairs are listed as ignored.
2. Per experiment, runs are grouped by ``config_signature`` (runs without one form their own
   group per recorded ``method``): the group with the most seeds is reported (ties: the group holding the newest
   run, by ``version_<n>``). Runs of another group are listed, never averaged in.
3. Within the group, several complete runs of one seed: the newest version counts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kdbias import registry
from kdbias.report.stats import (
    Estimate,
    accuracy_estimate,
    accuracy_estimate_binomial,
    binomial_interval,
    contrast_estimate,
    finite,
    paired_delta,
    paired_delta_binomial,
    seeds_and_images,
    summarize,
)

__all__ = ["PLAN_LAYERS", "Aggregate", "Once", "aggregate", "controls_of", "label", "value_at"]

PLAN_LAYERS: tuple[int, ...] = (3, 6, 9, 11)  # the plan's attention-distance layers
NO_SIGNATURE = "(no config_signature)"


def label(name: str) -> str:
    """The registry's label of an experiment (its name when it is not in the registry)."""
    experiment = registry.ALL_EXPERIMENTS.get(name)
    return experiment.label if experiment is not None else name


def controls_of(name: str) -> list[str]:
    """Experiments of the registry whose ``control_of`` is ``name`` (its matched controls)."""
    return [e.name for e in registry.EXPERIMENTS.values() if e.control_of == name]


def value_at(run: dict[str, Any], path: str) -> Any:
    """``run["a"]["b"]`` for ``"a.b"``; ``None`` where a level is missing."""
    value: Any = run
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _signature(run: dict[str, Any]) -> str:
    """``config_signature``; without one, a hash of the recorded ``method`` (so runs without a
    signature but with different parameters are not averaged either)."""
    signature = run.get("config_signature")
    if isinstance(signature, str) and signature:
        return signature
    method = json.dumps(run.get("method"), sort_keys=True, default=str)
    return f"{NO_SIGNATURE}; method {hashlib.sha256(method.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Once:
    """A quantity measured once (a teacher checkpoint's accuracy), shown once.

    ``value``: the fraction; ``k`` / ``images``: correct and measured test images (``None``
    when the count was not recorded); ``low`` / ``high``: its Clopper–Pearson interval;
    ``kind``: ``"test"`` (the teacher's classifier on the test split) or ``"k-NN"``;
    ``random``: the teacher had random weights (a smoke run); ``values``: every distinct
    value the runs recorded (more than one: the students did not all use one measurement).
    """

    value: float
    k: int | None
    images: int | None
    low: float | None
    high: float | None
    kind: str
    random: bool
    values: tuple[float, ...]


def fidelity_estimate(runs: Sequence[dict[str, Any]], key: str, kind: str) -> Estimate | None:
    """Fidelity to teacher ``key`` (``kind``: ``"agreement"`` or ``"kl"``) over ``runs`` (one per
    seed; :func:`~kdbias.report.stats.seeds_and_images`: the per-image values where every run kept them)."""
    values = {r["seed"]: v for r in runs if (v := finite(value_at(r, f"fidelity.{key}.{kind}"))) is not None}
    images = {r["seed"]: ((r.get("fidelity_images") or {}).get(key) or {}).get(kind) for r in runs}
    return seeds_and_images(values, {s: v for s, v in images.items() if s in values and v is not None})


def _correct(run: dict[str, Any], teacher: bool = False) -> Any:
    predictions = run.get("predictions")
    if predictions is None:
        return None
    return predictions.teacher_correct if teacher else predictions.correct


def _labels(run: dict[str, Any]) -> Any:
    predictions = run.get("predictions")
    return None if predictions is None else predictions.label


@dataclass
class Aggregate:
    """The runs a report uses and the statistics over their seeds.

    Attributes:
        dataset, preset: the reported pair (``None`` when there is no run).
        runs: per experiment, the selected runs (one per seed, sorted by seed).
        signature: per experiment, the reported ``config_signature``.
        left_out: per experiment, ``(run, reason)`` for every run of the pair not used.
        ignored: the other pairs as ``(dataset, preset, number of runs)``.
        others: experiments of the pair that the registry does not know (not tabulated).
    """

    dataset: str | None
    preset: str | None
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    signature: dict[str, str] = field(default_factory=dict)
    left_out: dict[str, list[tuple[dict[str, Any], str]]] = field(default_factory=dict)
    ignored: list[tuple[str, str, int]] = field(default_factory=list)
    others: list[str] = field(default_factory=list)

    def has(self, name: str) -> bool:
        """Whether ``name`` has at least one selected run."""
        return bool(self.runs.get(name))

    def newest(self, name: str) -> dict[str, Any] | None:
        """The selected run of ``name`` with the highest version."""
        runs = self.runs.get(name) or []
        return max(runs, key=lambda r: r["version"]) if runs else None

    def by_seed(self, name: str, path: str) -> dict[int, float]:
        """``{seed: value}`` of the finite numbers at ``path`` (see :func:`value_at`)."""
        out = {}
        for run in self.runs.get(name, []):
            value = finite(value_at(run, path))
            if value is not None:
                out[run["seed"]] = value
        return out

    def stat(self, name: str, path: str) -> Estimate | None:
        """Mean ± t-CI over seeds of the number at ``path``; ``None`` without data."""
        values = self.by_seed(name, path)
        return summarize(values.values(), seeds=values.keys())

    def fidelity(self, name: str, key: str, kind: str) -> Estimate | None:
        """Fidelity of ``name`` to teacher ``key`` (:func:`fidelity_estimate` over its runs)."""
        return fidelity_estimate(self.runs.get(name, []), key, kind)

    def seed_set(self) -> tuple[int, ...]:
        """Every seed of a selected student run: the experiment's full set of seeds."""
        return tuple(sorted({r["seed"] for n in registry.STUDENTS for r in self.runs.get(n, [])}))

    def per_image(self, names: Sequence[str], seeds: Sequence[int]) -> dict[str, dict[int, Any]] | None:
        """``{name: {seed: correct}}`` when every run of ``names`` at ``seeds`` has per-image
        predictions on the same labelled test images; else ``None``."""
        out: dict[str, dict[int, Any]] = {}
        labels = None
        for name in names:
            runs = {r["seed"]: r for r in self.runs.get(name, [])}
            out[name] = {}
            for seed in seeds:
                run = runs.get(seed)
                correct = None if run is None else _correct(run)
                if correct is None:
                    return None
                if labels is None:
                    labels = _labels(run)
                elif not _same(labels, _labels(run)):
                    return None
                out[name][seed] = correct
        return out

    def _images(self, names: Sequence[str]) -> int | None:
        """The test-image count every selected run of ``names`` recorded (one value), else ``None``."""
        counts = set()
        for name in names:
            for run in self.runs.get(name, []):
                predictions = run.get("predictions")
                count = predictions.num_images if predictions is not None else run.get("test_images")
                counts.add(count if isinstance(count, int) else None)
        return counts.pop() if len(counts) == 1 else None

    def acc(self, name: str) -> Estimate | None:
        """Test accuracy (``test_acc``: official test split, selected checkpoint), fraction,
        over seeds, with the seed and test-image interval (:mod:`kdbias.report.stats`)."""
        accs = self.by_seed(name, "test_acc")
        if not accs:
            return None
        per_image = self.per_image([name], sorted(accs))
        if per_image is not None:
            return accuracy_estimate(per_image[name])
        images = self._images([name])
        if images is not None:
            return accuracy_estimate_binomial(accs, images)
        return summarize(accs.values(), seeds=accs.keys())

    def delta(self, name: str, reference: str, path: str = "test_acc") -> Estimate | None:
        """``name - reference`` paired by seed at ``path`` (n = number of shared seeds); for
        ``test_acc`` image by image on the same test images when both have predictions."""
        a, b = self.by_seed(name, path), self.by_seed(reference, path)
        if path != "test_acc":
            return paired_delta(a, b)
        seeds = sorted(s for s in a if s in b)
        if not seeds:
            return None
        per_image = self.per_image([name, reference], seeds)
        if per_image is not None:
            return contrast_estimate(per_image, {name: 1.0, reference: -1.0})
        images = self._images([name, reference])
        return paired_delta_binomial(a, b, images) if images is not None else paired_delta(a, b)

    def attention_by_seed(self, name: str) -> dict[int, float]:
        """Per seed: mean of ``attn_dist`` over :data:`PLAN_LAYERS` (runs missing one are left out)."""
        out = {}
        for run in self.runs.get(name, []):
            values = [finite(value_at(run, f"attn_dist.{layer}")) for layer in PLAN_LAYERS]
            if all(v is not None for v in values):
                out[run["seed"]] = sum(values) / len(values)  # type: ignore[arg-type]
        return out

    def attention_delta(self, name: str, reference: str) -> Estimate | None:
        """Paired Δ of the four-layer mean attention distance (px)."""
        return paired_delta(self.attention_by_seed(name), self.attention_by_seed(reference))

    def has_attention(self, name: str) -> bool:
        """Whether any selected run of ``name`` has ``attn_dist``."""
        return any(run.get("attn_dist") for run in self.runs.get(name, []))

    def method(self, name: str) -> dict[str, Any]:
        """``method`` of the newest selected run (one configuration: the same for every seed)."""
        run = self.newest(name)
        method = None if run is None else run.get("method")
        return method if isinstance(method, dict) else {}

    def teacher_names(self, name: str) -> list[str]:
        """Distinct ``teacher.name`` of the selected runs (the teacher actually used)."""
        names = []
        for run in self.runs.get(name, []):
            value = value_at(run, "teacher.name")
            if isinstance(value, str) and value not in names:
                names.append(value)
        return names

    def teacher_acc(self, name: str) -> Once | None:
        """The accuracy of the teacher ``name``'s students used, measured once: ``teacher_acc``
        (its classifier on the test split, inside the student run) or, without it, a headless
        teacher's weighted k-NN accuracy (``teacher_knn_acc``). The student runs repeat one
        measurement of one frozen checkpoint: it is not averaged over them."""
        runs = self.runs.get(name, [])
        tested = self.by_seed(name, "teacher_acc")
        kind, values = ("test", tested) if tested else ("k-NN", self.by_seed(name, "teacher_knn_acc"))
        if not values:
            return None
        distinct = tuple(sorted(set(values.values())))
        value = distinct[0] if len(distinct) == 1 else values[min(values)]
        k = images = None
        first = next(r for r in runs if r["seed"] == min(values))
        if kind == "test":
            correct = _correct(first, teacher=True)
            if correct is not None:
                k, images = int(correct.sum()), int(correct.shape[0])
            elif isinstance(first.get("test_images"), int):
                images = first["test_images"]
                k = round(value * images)
        elif isinstance(first.get("teacher_knn_images"), int):
            images = first["teacher_knn_images"]
            k = round(value * images)
        low = high = None
        if k is not None and images:
            low, high = binomial_interval(k, images)
        random = any(value_at(r, "teacher.source") == "random" for r in runs)
        return Once(value, k, images, low, high, kind, random, distinct)

    def once(self, name: str) -> Once | None:
        """A single run's test accuracy (a teacher experiment trained once) as :class:`Once`."""
        runs = self.runs.get(name, [])
        if len(runs) != 1 or finite(runs[0].get("test_acc")) is None:
            return None
        run = runs[0]
        value = float(run["test_acc"])
        correct = _correct(run)
        if correct is not None:
            k, images = int(correct.sum()), int(correct.shape[0])
        elif isinstance(run.get("test_images"), int):
            images = run["test_images"]
            k = round(value * images)
        else:
            k = images = None
        low, high = binomial_interval(k, images) if k is not None and images else (None, None)
        return Once(value, k, images, low, high, "test", False, (value,))

    def random_teachers(self) -> list[str]:
        """Experiments whose selected runs used a random-weight teacher (``teacher.source`` "random")."""
        return [n for n, runs in self.runs.items() if any(value_at(r, "teacher.source") == "random" for r in runs)]

    def cka_keys(self, name: str) -> list[str]:
        """The CKA comparisons (keys of ``cka``) of ``name``'s runs, in order of appearance."""
        keys: list[str] = []
        for run in self.runs.get(name, []):
            for key in run.get("cka") or {}:
                if key not in keys:
                    keys.append(key)
        return keys


def _same(a: Any, b: Any) -> bool:
    return a is not None and b is not None and a.shape == b.shape and bool((a == b).all())


def _pair(run: dict[str, Any]) -> tuple[str, str]:
    return run["dataset"], run["preset"]


def aggregate(runs: Sequence[dict[str, Any]], dataset: str | None = None, preset: str | None = None) -> Aggregate:
    """Select the runs to report (module docstring: the rules) from :func:`load_runs`' output.

    ``dataset`` / ``preset`` pick the pair (either may be ``None``: the best matching pair).
    """
    counts: dict[tuple[str, str], set[str]] = {}
    totals: dict[tuple[str, str], int] = {}
    for run in runs:
        pair = _pair(run)
        counts.setdefault(pair, set()).add(run["experiment"])
        totals[pair] = totals.get(pair, 0) + 1
    candidates = [p for p in counts if (dataset is None or p[0] == dataset) and (preset is None or p[1] == preset)]
    known = set(registry.EXPERIMENTS)
    if candidates:
        chosen: tuple[str, str] | None = min(
            candidates,
            key=lambda p: (-len(counts[p] & known), -len(counts[p]), p[1] != "paper", p[0] == "digits", p),
        )
        result = Aggregate(dataset=chosen[0], preset=chosen[1])  # type: ignore[index]
    else:
        chosen = None
        result = Aggregate(dataset=dataset, preset=preset)
    result.ignored = sorted((p[0], p[1], totals[p]) for p in counts if p != chosen)

    by_experiment: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if _pair(run) == chosen:
            by_experiment.setdefault(run["experiment"], []).append(run)
    for name, group_runs in sorted(by_experiment.items()):
        _select(result, name, group_runs)
    result.others = sorted(set(result.runs) - set(registry.ALL_EXPERIMENTS))
    return result


def _select(result: Aggregate, name: str, runs: list[dict[str, Any]]) -> None:
    """One configuration (most seeds; ties: newest run) and the newest run of each seed."""
    groups: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for run in runs:
        groups.setdefault(_signature(run), {}).setdefault(run["seed"], []).append(run)

    def score(signature: str) -> tuple[int, int]:
        seeds = groups[signature]
        return len(seeds), max(r["version"] for per_seed in seeds.values() for r in per_seed)

    chosen = max(groups, key=score)
    selected, left = [], []
    for seed, per_seed in sorted(groups[chosen].items()):
        ordered = sorted(per_seed, key=lambda r: r["version"], reverse=True)
        selected.append(ordered[0])
        left += [(r, f"older run of seed {seed} (version_{ordered[0]['version']} counts)") for r in ordered[1:]]
    for signature, seeds in sorted(groups.items()):
        if signature == chosen:
            continue
        n = len(seeds)
        for per_seed in seeds.values():
            for run in per_seed:
                left.append(
                    (
                        run,
                        f"configuration {signature} ({n} seed{'s' if n != 1 else ''}), not the reported "
                        f"{chosen}: runs with another configuration are never averaged",
                    )
                )
    result.runs[name] = selected
    result.signature[name] = chosen
    if left:
        result.left_out[name] = sorted(left, key=lambda item: (item[0]["seed"], item[0]["version"]))
