"""One small registry type, used for data sets, models, methods, loss terms, generators,
discriminators and GAN losses: a string in a config picks an entry."""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from datafree.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; `@REGISTRY.register("name")` adds one."""

    def __init__(self, kind: str, on_miss: Callable[[str], None] | None = None) -> None:
        """`on_miss(name)` may register more entries when a name is not found (lazy imports)."""
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._on_miss = on_miss

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def add(obj: T) -> T:
            key = name or getattr(obj, "__name__")
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = obj
            return obj

        return add

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def get(self, name: str) -> T:
        if name not in self:
            raise ConfigError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._entries, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        shown = ", ".join(n for n in self.names() if not n.startswith("torchvision."))
        return f"unknown {self.kind} {name!r}{hint} (choose from: {shown})"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        if name not in self._entries and self._on_miss is not None and isinstance(name, str):
            self._on_miss(name)
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
