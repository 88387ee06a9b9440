"""Issue 14 probe tables from experiments/i14_task_probe.csv and experiments/i14_cycles.csv.

    .venv/bin/python experiments/summarize_i14.py            # all tables
    .venv/bin/python experiments/summarize_i14.py transfer   # one of: transfer, lr, ensembles, cycles

transfer: per variant and target epochs, the fine-tune at its best lr on val (mean over
seeds) vs scratch at its best lr, the benefit and its per-seed paired values.
ensembles: Local/Global DE(K) ensemble and soup vs the mean member (val and test).
cycles: SSE vs StarSSE per (variant, r, q): snapshots 2..5 individual val minus the
fine-tune, and ensemble / soup of 5 (mean over seeds).
"""

from __future__ import annotations

import sys

import pandas as pd

from trainables.methods import GLOBAL_DE, LOCAL_DE, SSE, STAR_SSE

PROBE = "experiments/i14_task_probe.csv"
CYCLES = "experiments/i14_cycles.csv"
pd.set_option("display.width", 250)
pd.set_option("display.max_rows", 500)


def pm(s: pd.Series, scale: float = 100) -> str:
    s = s.dropna() * scale
    return f"{s.mean():.2f} ± {s.std():.2f}" if len(s) > 1 else f"{s.mean():.2f}"


def lr_table(df: pd.DataFrame) -> pd.DataFrame:
    keys = ["tag", "source", "width", "epochs", "lr"]
    g = df.groupby(keys, sort=True)
    out = g.agg(n=("seed", "size"), val=("val_acc", "mean"), val_sd=("val_acc", "std"),
                test=("test_acc", "mean"), train=("train_acc", "mean"),
                sec=("finetune_s", "mean")).reset_index()
    for c in ("val", "val_sd", "test", "train"):
        out[c] = (100 * out[c]).round(2)
    return out


def transfer_table(df: pd.DataFrame) -> pd.DataFrame:
    lrs = lr_table(df)
    best = lrs.loc[lrs.groupby(["tag", "epochs"]).val.idxmax()]
    scratch = best[best.source == "scratch"].set_index(["width", "epochs"])
    rows = []
    for _, b in best[best.source != "scratch"].iterrows():
        if (b.width, b.epochs) not in scratch.index:
            continue
        s = scratch.loc[(b.width, b.epochs)]
        ft = df[(df.tag == b.tag) & (df.epochs == b.epochs) & (df.lr == b.lr)].set_index("seed")
        sc = df[(df.tag == s.tag) & (df.epochs == b.epochs) & (df.lr == s.lr)].set_index("seed")
        paired = (100 * (ft.val_acc - sc.val_acc)).dropna().round(1).tolist()
        rows.append({
            "variant": b.tag, "width": b.width, "epochs": int(b.epochs), "ft lr": b.lr,
            "ft val": pm(ft.val_acc), "n": len(ft), "scratch lr": s.lr, "scratch val": pm(sc.val_acc),
            "benefit": round(b.val - s.val, 2), "paired": paired,
            "ft test": round(100 * ft.test_acc.mean(), 2), "scratch test": round(100 * sc.test_acc.mean(), 2),
        })
    return pd.DataFrame(rows)


def ft_lr(task: str) -> float:
    """The fine-tune lr of a probe_cycles --task string (0.03 when not given)."""
    return float(dict(item.split("=") for item in task.split()).get("lr", 0.03))


def ensembles_table(cy: pd.DataFrame) -> pd.DataFrame:
    de = cy[cy.method.isin([LOCAL_DE, GLOBAL_DE])]
    rows = []
    for (tag, task, method, members, seed), g in de.groupby(["tag", "task", "method", "members", "seed"]):
        last = g[g.snapshot == g.snapshot.max()].iloc[0]
        rows.append({"variant": tag, "ft lr": ft_lr(task), "method": method, "K": int(members), "seed": seed,
                     "mean member val": g.ind_val.mean(), "ens val": last.ens_val, "soup val": last.soup_val,
                     "mean member test": g.ind_test.mean(), "ens test": last.ens_test,
                     "soup test": last.soup_test, "gain val": last.ens_val - g.ind_val.mean(),
                     "gain test": last.ens_test - g.ind_test.mean()})
    return pd.DataFrame(rows).round(2)


def cycles_table(cy: pd.DataFrame) -> pd.DataFrame:
    cyc = cy[cy.method.isin([SSE, STAR_SSE])]
    rows = []
    for (tag, task, method, r, q), g in cyc.groupby(["tag", "task", "method", "r", "q"]):
        per_seed = []
        for _, s in g.groupby("seed"):
            ft = s[s.snapshot == 1].ind_val.iloc[0]
            later = s[s.snapshot > 1]
            last = s[s.snapshot == s.snapshot.max()].iloc[0]
            per_seed.append({
                "ft": ft, "d2": s[s.snapshot == 2].ind_val.iloc[0] - ft,
                "dlast": last.ind_val - ft, "dmean": later.ind_val.mean() - ft,
                "ens": last.ens_val, "soup": last.soup_val, "ens_t": last.ens_test,
                "soup_t": last.soup_test, "dist": later.dist_first.max(),
            })
        p = pd.DataFrame(per_seed)
        rows.append({"variant": tag, "ft lr": ft_lr(task), "method": method, "r": r, "q": q, "n": len(p),
                     "ft val": p.ft.mean(), "Δ snap2": p.d2.mean(), "Δ snap5": p.dlast.mean(),
                     "Δ mean 2-5": p.dmean.mean(), "ens5 val": p.ens.mean(), "soup5 val": p.soup.mean(),
                     "ens5 test": p.ens_t.mean(), "soup5 test": p.soup_t.mean(), "max dist": p.dist.mean()})
    return pd.DataFrame(rows).round(2)


def main() -> None:
    which = sys.argv[1:] or ["transfer", "lr", "ensembles", "cycles"]
    df = pd.read_csv(PROBE)
    if "lr" in which:
        print("== every (variant, epochs, lr): val mean ± sd over seeds")
        print(lr_table(df).to_string(index=False))
    if "transfer" in which:
        print("\n== transfer benefit at the best val lr\n", transfer_table(df).to_string(index=False))
    try:
        cy = pd.read_csv(CYCLES)
    except FileNotFoundError:
        return
    if "ensembles" in which:
        print("\n== deep ensembles\n", ensembles_table(cy).to_string(index=False))
    if "cycles" in which:
        print("\n== SSE / StarSSE\n", cycles_table(cy).to_string(index=False))


if __name__ == "__main__":
    main()
