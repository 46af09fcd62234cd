"""The order training data is visited in: a seeded shuffle per epoch, resumable from one number."""
from __future__ import annotations

import random


class DataOrder:
    """Indices ``0 .. size-1`` in a seeded shuffled order, epoch after epoch.

    ``position`` (items handed out so far) is its whole state: a checkpoint stores it and a resumed run
    continues with exactly the items the interrupted one would have taken next.
    """

    def __init__(self, size: int, seed: int, position: int = 0) -> None:
        if size < 1:
            raise ValueError("DataOrder needs at least one item")
        self.size, self.seed, self.position = size, seed, position
        self._epoch, self._order = -1, list(range(size))

    def _epoch_order(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            self._epoch, self._order = epoch, list(range(self.size))
            random.Random(f"{self.seed}/{epoch}").shuffle(self._order)
        return self._order

    def take(self, n: int) -> list[int]:
        """The next ``n`` indices."""
        out = [self._epoch_order(p // self.size)[p % self.size] for p in range(self.position, self.position + n)]
        self.position += n
        return out

    @property
    def epoch(self) -> float:
        """Epochs handed out so far."""
        return self.position / self.size
