"""Name -> builder registries (encoders, heads). A miss lists the choices.

    HEADS = Registry("head")
    @HEADS.register("lstm")
    class LSTMHead(RecurrentHead): ...
    HEADS.get("lstn")   # UnknownNameError: unknown head 'lstn'; choose from conv1d, gru, lstm, ...
"""
from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from videoseq.errors import ConfigError

T = TypeVar("T")


class UnknownNameError(ConfigError, ValueError):
    """A name not in a registry. A ValueError (the torchvision/timm convention) and a ConfigError,
    so the CLI prints it as one line."""


class Registry(Generic[T]):
    """Names mapped to items of one kind (`kind` names it in errors); a name is registered once."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **info: Any) -> Callable[[T], T]:
        """A decorator that registers its item as `name` and returns the item unchanged. Keyword
        arguments are facts about the item that callers may read without building it (`info`)."""
        def add(item: T) -> T:
            assert name not in self._items, f"{self.kind} {name!r} registered twice"
            self._items[name] = item
            self._info[name] = dict(info)
            return item
        return add

    def add(self, name: str, item: T, **info: Any) -> None:
        """Register `item` as `name` (`register` without the decorator)."""
        self.register(name, **info)(item)

    def info(self, name: str) -> dict[str, Any]:
        """The facts registered with `name` (a copy); `UnknownNameError` for an unknown name."""
        self.get(name)
        return dict(self._info[name])

    def items(self) -> list[tuple[str, T]]:
        """(name, item) pairs, sorted by name."""
        return [(n, self._items[n]) for n in self.names()]

    def get(self, name: str) -> T:
        """The item registered as `name`; `UnknownNameError` listing the registered names otherwise."""
        if name not in self._items:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; choose from {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
