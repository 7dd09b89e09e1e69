"""Put a finished local folder in place of an old one in one step, so a reader (or a stage
killed at any moment) sees the old folder or the new one, never a part of either.

Linux swaps two paths atomically with ``renameat2(RENAME_EXCHANGE)`` (ext4, xfs, btrfs, tmpfs
and overlayfs support it). Where it is missing the old folder is moved aside first; a kill
between the two renames leaves it at ``.<name>.old``, which the next swap puts back first.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV}
_libc = ctypes.CDLL(None, use_errno=True)


def exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths atomically; False where the system cannot."""
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is None:
        return False
    done = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(second))


def backup_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def restore_interrupted_swap(target: Path) -> None:
    """Put back an old folder that a swap killed half-way left aside."""
    backup = backup_path(target)
    if backup.exists() and not target.exists():
        os.replace(backup, target)


def staging_prefix(target: Path) -> str:
    return f".{target.name}."


def remove_stale_staging(target: Path) -> None:
    """Remove the staging folders that killed writers of ``target`` left behind."""
    for stale in target.parent.glob(f"{staging_prefix(target)}*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def swap_in_folder(staging: Path, target: Path) -> None:
    """Make the complete folder ``staging`` appear at ``target``; the old one is removed."""
    restore_interrupted_swap(target)
    if not target.exists():
        os.replace(staging, target)
        return
    if exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # now the old folder
        return
    backup = backup_path(target)
    if backup.exists():
        shutil.rmtree(backup)
    os.replace(target, backup)
    os.replace(staging, target)
    shutil.rmtree(backup, ignore_errors=True)
