"""A small generic registry: name -> object, with aliases and did-you-mean errors.

Sources, variants, eval backends and tasks each live in one; lookups that miss name the closest
match and list what is available.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._frozen = False

    def register(self, *names: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            for name in names:
                self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if self._frozen:
            raise RuntimeError(f"{self.kind} registry is frozen; cannot add {name!r}")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(sorted(self._items))}") from None

    def freeze(self) -> None:
        self._frozen = True

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._items.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._items
