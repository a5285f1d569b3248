"""A Kubernetes Secret volume on local disk, updated the way the kubelet updates one (importable as
`secret_volume` in tests).

The kubelet's AtomicWriter writes every key of the new version into a fresh hidden directory
(`..2025_01_01_00_00_00.123`), points a temporary symlink at it and renames that over `..data`; each key
file is a symlink `KEY -> ..data/KEY`. So a reader sees the whole old version or the whole new one,
through paths that never change, while the inode they resolve to does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["SecretVolume"]


class SecretVolume:
    """A directory of key files, swapped as one by `update`."""

    def __init__(self, root: Path, data: Mapping[str, str]) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._version = 0
        self.update(data)

    def path(self, key: str) -> Path:
        return self.root / key

    def update(self, data: Mapping[str, str]) -> None:
        """Write a new version and swap `..data` to it atomically (os.replace of a symlink)."""
        self._version += 1
        version = self.root / f"..{self._version:04d}"
        version.mkdir()
        for key, value in data.items():
            (version / key).write_text(value + "\n")
        staged = self.root / "..data_tmp"
        staged.symlink_to(version.name)
        os.replace(staged, self.root / "..data")
        for key in data:
            link = self.root / key
            if not link.is_symlink():
                link.symlink_to(Path("..data") / key)
