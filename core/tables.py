"""The fixed-width tables and counts the commands print (plan, status)."""

from __future__ import annotations

from collections.abc import Sequence


def fmt_count(n: float) -> str:
    """1.3e10 -> '13B', 55296 -> '55.3k'."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            v = n / div
            return f"{v:.0f}{unit}" if v >= 100 or v == int(v) else f"{v:.3g}{unit}"
    return f"{n:.3g}"


def render(columns: Sequence[str], rows: Sequence[Sequence[str]], footer: Sequence[str] = (),
           right_from: int | None = None) -> list[str]:
    """Lines of a table: header, a rule, the rows, and (if given) a rule and ``footer``.

    Columns are as wide as their widest cell; cells left-aligned, or right-aligned from column
    ``right_from`` on (numbers); trailing blanks stripped.
    """
    everything = [columns, *rows, *([footer] if footer else [])]
    widths = [max(len(r[i]) for r in everything) for i in range(len(columns))]

    def line(r: Sequence[str]) -> str:
        cells = (c.rjust(w) if right_from is not None and i >= right_from else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        return "  ".join(cells).rstrip()

    rule = "-" * len(line(columns))
    out = [line(columns), rule, *map(line, rows)]
    if footer:
        out += [rule, line(footer)]
    return out
