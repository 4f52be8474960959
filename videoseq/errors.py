"""Exceptions for bad input. Each renders as one line that names the input and the reason."""
from __future__ import annotations

from pathlib import Path


class VideoseqError(Exception):
    """Base class: anything the CLI reports as a one-line error instead of a traceback."""


class PathError(VideoseqError):
    """An error about one file: `.path` and `.reason`, rendered by `template`; picklable across
    process pools (the exception travels back from a worker as itself)."""

    template = "{path}: {reason}"

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(self.template.format(path=self.path, reason=reason))

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


class VideoReadError(PathError):
    """A video that cannot be used: `VideoReadError(path, "truncated after 12 frames")`."""


class ConfigError(VideoseqError):
    """A configuration file or `--set` override that does not fit the config schema."""


class DatasetError(VideoseqError):
    """A dataset root that cannot be used as given (layout, splits, groups, manifest)."""


class BundleError(VideoseqError):
    """A model bundle that cannot be loaded (missing, corrupt, incompatible)."""


class OutputError(PathError):
    """An output that cannot be written: `OutputError(path, "no space left on device")`. Nothing
    partial is left behind that a later run would trust."""

    template = "{path}: cannot write ({reason})"
