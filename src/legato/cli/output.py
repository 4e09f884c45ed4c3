"""Printing for the CLI: raw JSON, plain aligned tables, timestamps, errors."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import typer


def print_json(data: Any) -> None:
    """The API's answer, as it came, indented."""
    typer.echo(json.dumps(data, indent=2))


def error(message: str) -> None:
    """One line on stderr."""
    typer.echo(message, err=True)


def cell(value: Any) -> str:
    """A table cell: `-` for nothing, lists comma-joined."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    lines = [headers, *cells]
    return "\n".join(
        "  ".join(value.ljust(widths[i]) for i, value in enumerate(line)).rstrip() for line in lines
    )


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table."""
    typer.echo(table(headers, rows))


def when(value: Any) -> str:
    """An API timestamp as `YYYY-MM-DD HH:MM:SS`, or `-`."""
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(value)
