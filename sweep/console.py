"""Plain-text output of the CLI (dry-run, status, a running sweep): numbers, aligned
tables, and the one line a sweep prints per finished snapshot."""

from __future__ import annotations

import math
from typing import Any


def fmt_num(x: float | None) -> str:
    """A number as short as `{:g}` writes it; '-' for None or NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:g}"


def fmt_range(lo: float, hi: float) -> str:
    """'12' or '12-30' (rounded to 2 decimals)."""
    if math.isclose(lo, hi):
        return fmt_num(round(lo, 2))
    return f"{fmt_num(round(lo, 2))}-{fmt_num(round(hi, 2))}"


def text_table(rows: list[list[str]], right: set[int], indent: str = "") -> str:
    """Rows (the first is the header) as aligned columns with a rule under the header;
    the columns in `right` are right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in pairs]
        lines.append(indent + "  ".join(cells).rstrip())
        if j == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def snapshot_line(trial: str, result: dict[str, Any]) -> str:
    """`sse_1a2b snapshot 2/5: test acc ind 0.8120 ens 0.8312 soup 0.8275` (and `DIVERGED`)."""
    accs = " ".join(f"{kind} {result.get(f'{kind}_test_acc', math.nan):.4f}"
                    for kind in ("ind", "ens", "soup"))
    line = f"{trial} snapshot {result['snapshot']}/{result.get('num_snapshots', '?')}: test acc {accs}"
    return line + (" DIVERGED" if result.get("diverged") else "")

