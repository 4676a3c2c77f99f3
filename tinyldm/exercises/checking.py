"""The machinery every lesson's checkers share: run the student's function, compare, explain."""

from __future__ import annotations

from typing import Any, Callable

import torch

__all__ = ["NOT_ATTEMPTED", "attempt", "expect_close", "not_attempted", "passed"]

NOT_ATTEMPTED = object()


def attempt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the student's function; an unfinished one (returns None or raises NotImplementedError) gives
    ``NOT_ATTEMPTED`` so the notebook can run top to bottom before the exercise is done."""
    try:
        result = fn(*args, **kwargs)
    except NotImplementedError:
        return NOT_ATTEMPTED
    return NOT_ATTEMPTED if result is None else result


def expect_close(name: str, got: Any, expected: torch.Tensor, hint: str, atol: float = 1e-5) -> None:
    """Raise AssertionError naming the exercise, what differed and a hint, unless ``got`` matches ``expected``."""
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{name}: expected a torch.Tensor, got {type(got).__name__}. Hint: {hint}")
    if got.shape != expected.shape:
        raise AssertionError(
            f"{name}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}. Hint: {hint}"
        )
    try:
        torch.testing.assert_close(got.to(expected.dtype), expected, atol=atol, rtol=1e-4)
    except AssertionError as err:
        raise AssertionError(f"{name}: values differ from the reference. Hint: {hint}\n{err}") from None


def passed(name: str, detail: str) -> None:
    """Print the success line (checkers return nothing, so a notebook cell shows only this line)."""
    print(f"[ok] {name}: {detail}")


def not_attempted(name: str) -> None:
    """Print a reminder that the exercise is still open."""
    print(f"[todo] {name}: not attempted yet (the function returned None or raised NotImplementedError)")
