"""Decoded image sets kept in a process's memory, bounded in bytes (`data.memory_budget`).

Used when a trial has no decoded-image cache folder (`trainables.data.decoded`): a worker
process that runs trial after trial keeps the sets it decoded last, up to the budget, and
forgets the least recently used first. A set larger than the budget is never kept.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable

import torch

from trainables.spec import DEFAULT_BUDGET  # noqa: E402,F401


class HeldSets:
    def __init__(self, budget: int = DEFAULT_BUDGET):
        self.budget = budget
        self._sets: OrderedDict[Hashable, torch.Tensor] = OrderedDict()

    @property
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._sets.values())

    def __len__(self) -> int:
        return len(self._sets)

    def get(self, key: Hashable, make: Callable[[], torch.Tensor], budget: int | None = None) -> torch.Tensor:
        """The tensor kept under `key`, or `make()` (kept when it fits `budget` bytes)."""
        if budget is not None:
            self.budget = budget
        if key in self._sets:
            self._sets.move_to_end(key)
            return self._sets[key]
        value = make()
        size = value.numel() * value.element_size()
        if size <= self.budget:
            self._sets[key] = value
            while self.bytes > self.budget:
                self._sets.popitem(last=False)
        return value
