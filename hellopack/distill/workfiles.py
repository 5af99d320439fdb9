"""Files of a build's work folder and output: teacher identities, tensors, memory maps, temporaries."""

from __future__ import annotations

import errno
import glob
import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load as st_load

from hellopack.errors import HellopackError


def file_identity(spec: str) -> list[Any]:
    """A teacher spec plus, for checkpoint files, their size and sha256 (a retrained file invalidates the fit)."""
    from hellopack.models.teachers import split_source

    arch, _, rest = spec.partition(":")
    rest, entry = split_source(rest)  # FILE#ema: the file's EMA weights, another teacher
    path = Path(rest).expanduser()
    if not path.is_file():
        return [spec]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return [arch if entry is None else f"{arch}#{entry}", path.stat().st_size, h.hexdigest()]


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    try:
        return {k: v.numpy() for k, v in st_load(path.read_bytes()).items()}
    except FileNotFoundError:
        raise HellopackError(f"work directory is missing '{path}'; delete '{path.parent.parent}' and rerun") from None


def open_memmap(path: Path, mode: str, shape: tuple[int, ...], final: Path) -> np.ndarray:
    """A uint8 .npy memory map with its disk blocks reserved up front.

    A sparse memory-mapped file that the disk cannot back kills the process with SIGBUS on
    the first write into it; reserving the blocks turns a full disk into ENOSPC here.
    """
    try:
        arr = np.lib.format.open_memmap(path, mode=mode, dtype=np.uint8, shape=shape)
        if hasattr(os, "posix_fallocate"):
            with open(path, "r+b") as f:
                try:
                    os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
                except OSError as e:
                    if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):  # those: cannot reserve here
                        raise
    except OSError as e:
        if mode == "w+":
            path.unlink(missing_ok=True)
        raise HellopackError(f"cannot write '{final}': {e.strerror or e}; "
                             "free space or pass another --workdir") from None
    return arr


def remove_stale_temporaries(out: Path) -> None:
    """Delete ``.<archive name>.<random>.tmp`` files beside ``out``: archive writes cut short by a kill."""
    parent = out.parent if str(out.parent) else Path(".")
    for tmp in parent.glob(glob.escape(f".{out.name}.") + "*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)


def check_output(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise HellopackError(f"output folder '{parent}' does not exist; create it or choose another --out")
    if not os.access(parent, os.W_OK):
        raise HellopackError(f"output folder '{parent}' is not writable; choose another --out")
    if out.is_dir():
        raise HellopackError(f"--out '{out}' is a folder; name the archive file, e.g. {out / 'data.hellopack'}")


def slot_writer(out: np.ndarray) -> Callable[[int, torch.Tensor], None]:
    """extract_crops' sink: crop tensors into their slots of the (memory-mapped) crops array."""
    def write(slot: int, crop: torch.Tensor) -> None:
        out[slot] = crop.numpy()

    return write
