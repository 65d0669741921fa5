"""The one bounded cache: remember what a few distinct inputs map to, and forget it all when full.

Everything the hot paths remember (category sets encoded once, consent-state plans, cookie verdicts,
rewritten tags, parsed Cookie headers) has few distinct keys on a healthy site and unboundedly many under
a hostile client. An LRU would spend bookkeeping on every hit to keep the right entries under attack;
clearing everything when full costs nothing on a hit (a plain ``dict`` lookup) and one refill after a
flood, which is the trade every caller here wants.

Reads are ``memo.get(key)`` or ``key in memo``, the dict's own C code. Writes go through `put`, which
bounds the cache by entries or, with a `weigh` function, by an estimate of the memory the entries hold.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(dict[K, V]):
    """A dict bounded to `size` entries (or `size` weight units) that empties itself when full."""

    __slots__ = ("size", "weigh", "weight")

    def __init__(self, size: int, weigh: Callable[[K, V], int] | None = None) -> None:
        super().__init__()
        self.size = size
        self.weigh = weigh
        self.weight = 0

    def put(self, key: K, value: V) -> V:
        """Remember `value` for `key` (emptying the cache first when it is full) and return it."""
        if self.weigh is None:
            if len(self) >= self.size:
                self.clear()
        else:
            w = self.weigh(key, value)
            if w > self.size:
                return value  # larger than the whole cache: not worth remembering
            if key in self:  # replaced (a value read again on every request): its weight counts once
                self.weight -= self.weigh(key, self[key])
            if self.weight + w > self.size:
                self.clear()
            self.weight += w
        self[key] = value
        return value

    def clear(self) -> None:
        super().clear()
        self.weight = 0
