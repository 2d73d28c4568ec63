"""Command-line flag types shared by the subcommands (``mini-gumbel``): a bad value is one argparse line."""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["directory"]


def directory(text: str) -> Path:
    """An ``--out`` folder. The empty text is refused: Path("") is the current directory, where results.json,
    results.md and the plots would land without anyone asking for it."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a directory, got {text!r} (use . for the current directory)")
    return Path(text)


directory.__name__ = "a directory"
