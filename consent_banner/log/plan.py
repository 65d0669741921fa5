"""How the log core talks to a database without doing I/O itself: a write is a plan.

A plan is a generator that yields the statements of one transaction, one `Step` at a time, and is
sent each one's result; it returns its value and the head state it leaves (None: unchanged). The
core writes each algorithm (commit a batch, checkpoint, purge, migrate) once as a plan; a driver
runs it, the SQLite one synchronously on its writer thread, the PostgreSQL one on a pooled
connection, each inside a transaction of its own and under its own write lock. The driver makes
the new state the remembered one only once the transaction has committed.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, NamedTuple, TypeVar

from .canonical import Row
from .head import HeadState

T = TypeVar("T")


class One(NamedTuple):
    """A query whose first row (or None) is sent back."""

    sql: str
    params: Sequence[object] = ()


class All(NamedTuple):
    """A query whose rows are sent back."""

    sql: str
    params: Sequence[object] = ()


class Exec(NamedTuple):
    """A statement; None is sent back."""

    sql: str
    params: Sequence[object] = ()


class Insert(NamedTuple):
    """Rows for one table (schema.insert_columns order), inserted the driver's fastest way."""

    table: str
    rows: Sequence[Row]
    ignore_conflicts: bool = False  # rows whose key is there already are left out


Step = One | All | Exec | Insert
# Any: what is sent back depends on the step (a row, rows, None); each plan unpacks what it asked for.
Plan = Generator[Step, Any, tuple[T, HeadState | None]]
Part = Generator[Step, Any, T]  # a piece of a plan, used with `yield from`
