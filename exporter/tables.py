"""Tables for people, shared by the batch and campaign views: identifiers are never cut or folded.

On a terminal wide enough, a rich table (cells are `Text`, never markup); anywhere else (pipes,
`kubectl logs`, a narrow terminal) the same rows as aligned plain text at their natural width. The last
row is a total and is shown in bold. Control characters in a cell (a newline in a label) are escaped.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

__all__ = ["plain_text", "print_table", "printable", "rich_table"]

_UNBOUNDED = 10_000  # columns: wider than any table of ours


def printable(cell: str) -> str:
    """A cell on one line: control characters shown escaped."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in cell)


def rich_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int, title: str | None
) -> Table:
    """The first `text_columns` are left-aligned and never wrap; the numbers are right-aligned."""
    table = Table(title=Text(printable(title)) if title else None)
    for number, name in enumerate(header):
        text_column = number < text_columns
        table.add_column(name, justify="left" if text_column else "right", no_wrap=text_column)
    cells = [[printable(cell) for cell in row] for row in rows]
    for row in cells[:-1]:
        table.add_row(*map(Text, row))
    if cells:
        table.add_row(*map(Text, cells[-1]), style="bold")
    return table


def plain_text(
    header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int, title: str | None
) -> str:
    """The same table as aligned plain text."""
    lines_of = [list(header), *([printable(cell) for cell in row] for row in rows)]
    widths = [max(len(row[n]) for row in lines_of) for n in range(len(header))]
    lines = [printable(title)] if title else []
    for row in lines_of:
        cells = [
            cell.ljust(width) if n < text_columns else cell.rjust(width)
            for n, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _natural_width(console: Console, table: Table) -> int:
    """How wide the table is when nothing is squeezed (rich's own measure stops at the console width)."""
    return Measurement.get(console, console.options.update_width(_UNBOUNDED), table).maximum


def print_table(
    console: Console,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    text_columns: int,
    title: str | None,
) -> None:
    """The rich table on a terminal wide enough for it, the plain table everywhere else."""
    table = rich_table(header, rows, text_columns, title)
    if console.is_terminal and _natural_width(console, table) <= console.width:
        console.print(table)
    else:
        text = plain_text(header, rows, text_columns, title)
        console.print(text, markup=False, highlight=False, crop=False, soft_wrap=True)
