"""Learning-rate schedule: linear warm-up, then cosine decay, per optimiser step."""

from __future__ import annotations

import math


class WarmupCosine:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    ``step < warmup_steps``: linear from ``1 / (warmup_steps + 1)`` up to 1 (never 0, so the
    first step learns). Afterwards: cosine from 1 down to ``min_ratio`` at ``total_steps``.
    A plain class (not a lambda) so that ``LambdaLR`` and checkpoints can pickle it.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.warmup_steps = max(0, min(int(warmup_steps), int(total_steps) - 1))
        self.total_steps = int(total_steps)
        self.min_ratio = float(min_ratio)

    def retarget(self, total_steps: int, warmup_epochs: float, max_epochs: int) -> None:
        """Stretch the schedule to ``total_steps`` (a resumed run allowed to train longer);
        the warm-up keeps its length in epochs. A no-op when nothing changed."""
        warmup = int(total_steps * warmup_epochs / max(1, max_epochs))
        self.__init__(warmup, total_steps, self.min_ratio)  # type: ignore[misc]

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
