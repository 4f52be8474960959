"""Where and how torch runs: the device a config names, and the intra-op thread count for a block.

    device = resolve_device("auto")          # cuda when available, else cpu
    with torch_threads(1):                   # tiny heads train faster single-threaded on a CPU
        ...
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch


def resolve_device(name: str) -> "torch.device":
    """`runtime.device` as a torch.device: "auto" is cuda when available, else cpu; any other name
    ("cpu", "cuda", "cuda:1", "mps") is taken as torch spells it."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with `n` torch intra-op threads (None: leave the count as is), then restore it."""
    import torch

    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
