"""Name -> builder registries (encoders, heads). A miss lists the choices.

    HEADS = Registry("head")
    @HEADS.register("lstm")
    class LSTMHead(RecurrentHead): ...
    HEADS.get("lstn")   # UnknownNameError: unknown head 'lstn'; choose from conv1d, gru, lstm, ...
"""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

from videoseq.errors import ConfigError

T = TypeVar("T")


class UnknownNameError(ConfigError, ValueError):
    """A name not in a registry. A ValueError (the torchvision/timm convention) and a ConfigError,
    so the CLI prints it as one line."""


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            assert name not in self._items, f"{self.kind} {name!r} registered twice"
            self._items[name] = item
            return item
        return add

    def add(self, name: str, item: T) -> None:
        self.register(name)(item)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; choose from {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
