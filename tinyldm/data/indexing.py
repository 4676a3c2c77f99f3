"""Checking an index into a dataset of fixed length, the same way for every dataset here."""

from __future__ import annotations

import operator

__all__ = ["check_index"]


def check_index(index: int, length: int, dataset: str) -> int:
    """``index`` as an int in [-length, length), or a TypeError / IndexError naming ``dataset`` and the valid range."""
    try:
        i = operator.index(index)
    except TypeError:
        raise TypeError(f"{dataset} index must be an int, got {type(index).__name__}: {index!r}") from None
    if not -length <= i < length:
        raise IndexError(f"index {i} is out of range for {dataset} of length {length}; use 0 <= index < {length}")
    return i
