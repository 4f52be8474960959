"""A split's stacked features on disk, read a batch of rows at a time: training memory that does not
grow with the number of videos.

    with SplitWriter(path, n=len(entries), views=2, steps=16, dim=D) as w:
        w.write(0, block)                      # (n_b, V, T, D) float32 rows, in order
    feats = DiskFeatures(path)                 # (N, V, T, D); feats[idx, view] -> (B, T, D) tensor

The file is a `.npy` array (readable with `numpy.load(path, mmap_mode="r")`). Rows are read with
`os.pread` into fresh arrays, never memory-mapped, so what a process holds is a batch: the rest
stays in the operating system's page cache, which is not the process's memory.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

DTYPE = np.dtype("<f4")


class SplitWriter:
    """Creates the `.npy` file of an (N, V, T, D) float32 array and writes blocks of rows into it."""

    def __init__(self, path: str | Path, *, n: int, views: int, steps: int, dim: int):
        self.path = Path(path)
        self.shape = (n, views, steps, dim)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = {"descr": np.lib.format.dtype_to_descr(DTYPE), "fortran_order": False, "shape": self.shape}
        self._file = open(self.path, "wb")
        np.lib.format.write_array_header_2_0(self._file, header)
        self.offset = self._file.tell()
        self.row_bytes = views * steps * dim * DTYPE.itemsize
        self._file.truncate(self.offset + n * self.row_bytes)

    def write(self, start: int, rows: np.ndarray) -> None:
        """Rows `start .. start + len(rows)` (each (V, T, D))."""
        rows = np.ascontiguousarray(rows, dtype=DTYPE)
        if rows.shape[1:] != self.shape[1:] or start < 0 or start + len(rows) > self.shape[0]:
            raise ValueError(f"rows {rows.shape} at {start} do not fit {self.shape}")
        self._file.seek(self.offset + start * self.row_bytes)
        self._file.write(rows.tobytes())

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DiskFeatures:
    """A read-only (N, V, T, D) float32 array in a `.npy` file: `feats[idx, view]` with `idx` (B,) int
    and `view` (B,) int or an int gives (B, T, D); `feats[a:b]` gives rows a..b, (b-a, V, T, D)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read:
                raise ValueError(f"{self.path}: .npy format {version} is not read here")
            shape, fortran, dtype = read[version](f)
            self.offset = f.tell()
        if fortran or np.dtype(dtype) != DTYPE or len(shape) != 4:
            raise ValueError(f"{self.path}: not an (N, V, T, D) little-endian float32 array")
        self.shape = tuple(int(s) for s in shape)
        n, v, t, d = self.shape
        self._step = t * d * DTYPE.itemsize                 # bytes of one (row, view)
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> torch.Tensor:
        n, v, t, d = self.shape
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                raise IndexError("DiskFeatures: slices of consecutive rows only")
            count = max(0, stop - start)
            raw = self._read(start * v * self._step, count * v * self._step)
            return torch.from_numpy(raw.reshape(count, v, t, d))
        idx, view = key
        idx = torch.as_tensor(idx, dtype=torch.int64).reshape(-1)
        view = torch.as_tensor(view, dtype=torch.int64).expand_as(idx)
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n or int(view.min()) < 0 or int(view.max()) >= v):
            raise IndexError(f"DiskFeatures: index out of range for shape {self.shape}")
        out = np.empty((len(idx), t, d), DTYPE)
        for k, (i, j) in enumerate(zip(idx.tolist(), view.tolist())):
            out[k] = self._read((i * v + j) * self._step, self._step).reshape(t, d)
        return torch.from_numpy(out)

    def _read(self, at: int, size: int) -> np.ndarray:
        buf = bytearray(size)
        view, done = memoryview(buf), 0
        while done < size:
            got = os.preadv(self._fd, [view[done:]], self.offset + at + done)
            if got <= 0:
                raise OSError(f"{self.path}: file ends early")
            done += got
        return np.frombuffer(buf, DTYPE)

    def close(self) -> None:
        """Close the file (reads after this fail)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001  interpreter shutdown
            pass

    def __reduce__(self):
        return (DiskFeatures, (str(self.path),))
