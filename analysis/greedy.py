"""The report's section on the sweep's greedy choices (`sweep.greedy`: a greedy ensemble and
a greedy soup across the whole sweep, chosen on validation) next to the best single trial
at equal K, with a paired 95% interval over the same test images. Reads
`<sweep>/delivered/greedy.json`; computes nothing but the interval."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from analysis.stats import paired_bootstrap
from sweep.greedy import GREEDY_FILE
from sweep.layout import SweepLayout


def greedy_file(results: str | Path) -> Path | None:
    """greedy.json of the sweep whose results these are (a sweep directory or its results.parquet)."""
    path = Path(results)
    sweep_dir = path if path.is_dir() else path.parent
    found = Path(SweepLayout(str(sweep_dir)).path(SweepLayout.delivered, GREEDY_FILE))
    return found if found.is_file() else None


def _correct(bits: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(bits), np.uint8))[:n].astype(bool)


def greedy_rows(data: dict) -> list[dict]:
    """Per greedy choice: members, validation and test accuracy, and the paired difference to
    the best single trial (test accuracy, percentage points, bootstrap over images)."""
    single = data["best_single"]
    n = int(data["n_test"])
    rows = []
    for kind in ("ensemble", "soup"):
        if kind not in data:
            continue
        g = data[kind]
        a = _correct(g["test_correct"], n)
        b = _correct(single["test_correct"], n)
        iv = paired_bootstrap(a, b)
        rows.append({"choice": f"greedy {kind}", "members": len(g["members"]),
                     "val_acc": g["val_acc_after"][-1], "test_acc": g["test_acc"],
                     "diff": 100 * iv.mean, "low": 100 * iv.low, "high": 100 * iv.high,
                     "member_list": g["members"]})
    return rows


def greedy_html(results: str | Path) -> list[str]:
    path = greedy_file(results)
    if path is None:
        return []
    data = json.loads(path.read_text())
    single = data["best_single"]
    esc = html.escape
    out = ["<h2>Greedy choices across the sweep</h2>",
           f"<p>Chosen on validation only; compared with the best single trial "
           f"(<code>{esc(single['trial_key'])}</code>, {esc(single['method'])}, K = {data['k']}: test acc "
           f"{single['test_acc']:.4f}) on the same test images: the difference in percentage points with "
           "its paired 95% bootstrap interval over images (the models held fixed).</p>",
           '<table class="summary"><tr><th>choice</th><th>members</th><th>val acc</th><th>test acc</th>'
           "<th>Δ test acc (pp)</th><th>95% interval</th></tr>"]
    for r in greedy_rows(data):
        out.append(f"<tr><td>{esc(r['choice'])}</td><td>{r['members']}</td><td>{r['val_acc']:.4f}</td>"
                   f"<td>{r['test_acc']:.4f}</td><td>{r['diff']:+.2f}</td>"
                   f"<td>[{r['low']:+.2f}, {r['high']:+.2f}]</td></tr>")
    out.append("</table><p>Members, in the order taken (validation accuracy after each addition):</p><ul>")
    for kind in ("ensemble", "soup"):
        if kind in data:
            pairs = zip(data[kind]["members"], data[kind]["val_acc_after"], strict=True)
            steps = ", ".join(f"{esc(m)} ({v:.4f})" for m, v in pairs)
            out.append(f"<li>greedy {kind}: {steps}</li>")
    return [*out, "</ul>"]
