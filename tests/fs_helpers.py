"""The tests' look at folders, written once."""

from __future__ import annotations

from pathlib import Path


def files_under(root: Path) -> list[str]:
    """Every file below `root`, as sorted paths relative to it (folders left out)."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())
