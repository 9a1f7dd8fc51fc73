"""Progress hooks: how long computations tell their caller how far they are, without a global.

A hook is a plain callable taking the *increment of the fraction* of the callee's work just done: a function
given ``progress`` calls it as its model batches complete, with increments summing to (at most) 1 over the
call. A caller that splits its own work into parts hands each part a :func:`share` of its hook, weighted by the
part's expected cost, so the fractions compose from the innermost batch loop up to the progress bar. ``None``
means nobody is listening (every helper here passes None through, so callees need no branch but
``if progress is not None``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

#: ``progress(increment)``: another ``increment`` (a fraction of the callee's work, >= 0) is done
Progress = Callable[[float], None]


def share(progress: Progress | None, weight: float) -> Progress | None:
    """The hook of a part of the work worth ``weight`` (a fraction) of the whole ``progress`` reports on."""
    if progress is None:
        return None
    w = float(weight)

    def part(increment: float) -> None:
        progress(increment * w)

    return part


def split(progress: Progress | None, costs: Sequence[float]) -> list[Progress | None]:
    """One hook per part of the work, weighted by the parts' expected ``costs`` (any positive unit).

    Parts with no cost get a hook too (it moves nothing); with all costs zero every part moves nothing.
    """
    total = float(sum(costs))
    return [share(progress, c / total if total > 0 else 0.0) for c in costs]


def report(progress: Progress | None, done: float, total: float) -> None:
    """Tell ``progress`` that ``done`` more of ``total`` units (model inputs, batches, ...) are finished."""
    if progress is not None and total > 0:
        progress(done / total)


__all__ = ["Progress", "share", "split", "report"]
