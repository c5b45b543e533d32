"""Targets of the benchmarks: a measured value against a threshold, met or missed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    """``value`` should be at least ``goal`` (at most, with ``at_most``; above, ``strict``)."""

    name: str
    value: float
    goal: float
    at_most: bool = False
    strict: bool = False

    @property
    def met(self) -> bool:
        if math.isnan(self.value) or math.isnan(self.goal):
            return False
        if self.at_most:
            return self.value < self.goal if self.strict else self.value <= self.goal
        return self.value > self.goal if self.strict else self.value >= self.goal

    @property
    def miss_by(self) -> float:
        """How far from the goal when missed (0 when met), in the value's unit."""
        if self.met:
            return 0.0
        return abs(self.value - self.goal)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "goal": self.goal,
            "at_most": self.at_most,
            "strict": self.strict,
            "met": self.met,
            "miss_by": self.miss_by,
        }
