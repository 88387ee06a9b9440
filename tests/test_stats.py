"""analysis.intervals / stats / predictions on small tables with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.aggregate import summary_table
from analysis.intervals import t_interval, welch_interval
from analysis.predictions import image_level_tests
from analysis.stats import difference_interval, mcnemar, paired_bootstrap, paired_differences, tie_grid
from analysis.tables import paired_markdown


def test_t_interval_known_values():
    iv = t_interval([1.0, 2.0, 3.0])
    assert (iv.mean, iv.n, iv.std) == (2.0, 3, 1.0)
    half = 4.302652729911275 / np.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert (iv.low, iv.high) == pytest.approx((2 - half, 2 + half))
    one = t_interval([5.0, np.nan])
    assert one.n == 1 and one.mean == 5.0 and np.isnan(one.low) and not one.contains(5.0)


def test_welch_interval_known_values():
    iv = welch_interval([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    # se^2 = 1/3 + 2.5/5; df = se^4 / ((1/3)^2/2 + 0.5^2/4)
    se = np.sqrt(1 / 3 + 0.5)
    df = se**4 / ((1 / 3) ** 2 / 2 + 0.5**2 / 4)
    from scipy import stats

    half = stats.t.ppf(0.975, df) * se
    assert iv.mean == -1.0 and (iv.low, iv.high) == pytest.approx((-1 - half, -1 + half))


def _keyed(values: dict[tuple[int, int], float]) -> pd.Series:
    return pd.Series(values.values(), index=pd.MultiIndex.from_tuples(values.keys()))


def test_difference_is_paired_when_replicates_match():
    # a and b differ by exactly +0.01 in each replicate although replicates vary by 0.1:
    # paired, the interval is a point; unpaired it would span 0.
    a = _keyed({(0, 0): 0.80, (5, 0): 0.90, (10, 0): 0.70})
    b = _keyed({(0, 0): 0.79, (5, 0): 0.89, (10, 0): 0.69})
    iv = difference_interval(a, b)
    assert iv.paired and iv.n == 3 and iv.mean == pytest.approx(0.01)
    assert iv.low == pytest.approx(0.01) and iv.high == pytest.approx(0.01) and not iv.contains(0.0)
    unpaired = difference_interval(a, _keyed({(1, 1): 0.79, (6, 1): 0.89, (11, 1): 0.69}))
    assert not unpaired.paired and unpaired.contains(0.0)


def test_mcnemar_and_paired_bootstrap():
    a = np.array([True] * 10 + [False] * 90)
    b = np.zeros(100, bool)
    res = mcnemar(a, b)
    assert (res["only_a"], res["only_b"]) == (10, 0)
    assert res["p_value"] == pytest.approx(2 * 0.5**10)
    assert mcnemar(a, a)["p_value"] == 1.0
    same = paired_bootstrap(a, a)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
    iv = paired_bootstrap(a, b, n_boot=500)
    assert iv.mean == pytest.approx(0.10) and 0.03 < iv.low < 0.10 < iv.high < 0.17
    # two replicates: per-image differences averaged first
    two = paired_bootstrap(np.stack([a, b]), np.stack([b, b]), n_boot=200)
    assert two.mean == pytest.approx(0.05)
    with pytest.raises(ValueError, match="differ in shape"):
        mcnemar(a, a[:50])


def _table() -> pd.DataFrame:
    """3 replicates (checkpoints 0, 5, 10; seed 0) of Local DE, Global DE and SSE/StarSSE on
    a 1 x 2 grid, size K = 2; StarSSE at (1, 1) is Local DE + 0.02 in every replicate,
    SSE at (1, 0.5) Local DE + noise around 0 (a tie), StarSSE at (1, 0.5) best on val."""
    rows = []
    base = {0: 0.80, 5: 0.84, 10: 0.76}
    noise = {0: 0.01, 5: -0.012, 10: 0.003}

    def add(method, p, acc, val, lr=np.nan, cyc=np.nan):
        for snap in (1, 2):
            rows.append({"trial_id": f"{method}-{lr}-{cyc}-{p}", "status": "TERMINATED", "method": method,
                         "snapshot": snap, "lr_max": lr * 0.01, "cycle_epochs": cyc * 10,
                         "lr_max_ratio": lr, "cycle_epochs_ratio": cyc, "seed": 0, "pretrained_index": p,
                         "ens_val_acc": val, "ens_test_acc": acc if snap == 2 else 0.5})

    for p, acc in base.items():
        add("local_de", p, acc, 0.8)
        add("global_de", p, acc + 0.05, 0.9)
        add("sse", p, acc + noise[p], 0.7, 1.0, 0.5)
        add("sse", p, acc - 0.1, 0.6, 1.0, 1.0)
        add("star_sse", p, acc + 0.02, 0.85, 1.0, 1.0)
        add("star_sse", p, acc - 0.1, 0.6, 1.0, 0.5)
    return pd.DataFrame(rows)


def test_paired_differences_table_and_ties():
    df = _table()
    diffs = paired_differences(df).set_index(["method_a", "method_b"])
    assert len(diffs) == 6  # 4 methods, each pair once
    assert (diffs.n_pairs == 3).all() and diffs.paired.all()
    ld_star = diffs.loc[("local_de", "star_sse")]
    assert ld_star.mean_diff == pytest.approx(-0.02) and ld_star.verdict == "star_sse better"
    assert ld_star.cell_b == (1.0, 1.0)  # chosen on validation
    ld_sse = diffs.loc[("local_de", "sse")]
    assert ld_sse.verdict == "tie (interval contains 0)" and ld_sse.ci_low < 0 < ld_sse.ci_high
    ties = tie_grid(df, "sse", "ens_test_acc")
    assert ties.loc[1.0, 0.5] is True and ties.loc[1.0, 1.0] is False
    text = paired_markdown(paired_differences(df))
    line = "| Local DE | StarSSE (×1, ×1) | 3, 3 | 3 (paired) | -2.00 | [-2.00, -2.00] | star_sse better |"
    assert line in text


def test_summary_table_has_intervals():
    summary = summary_table(_table()).set_index("method")
    row = summary.loc["local_de"]
    iv = t_interval([0.80, 0.84, 0.76])
    assert row.n_runs == 3
    assert (row.ens_test_acc_ci_low, row.ens_test_acc_ci_high) == pytest.approx((iv.low, iv.high))


def test_image_level_tests_on_synthetic_predictions():
    df = _table()
    rng = np.random.default_rng(0)
    truth = rng.random((3, 400)) < 0.8
    rows = []
    for method, cell, flip in (("local_de", (np.nan, np.nan), 0), ("global_de", (np.nan, np.nan), 40),
                               ("sse", (1.0, 0.5), 0), ("star_sse", (1.0, 1.0), 8)):
        for r, p in enumerate((0, 5, 10)):
            correct = truth[r].copy()
            wrong = np.flatnonzero(~correct)[:flip]
            correct[wrong] = True  # `flip` more images right than Local DE
            rows.append({"method": method, "snapshot": 2, "seed": 0, "pretrained_index": p,
                         "lr_max_ratio": cell[0], "cycle_epochs_ratio": cell[1],
                         "ens_test_pred": bytes(400), "ens_test_correct": np.packbits(correct).tobytes()})
    tests = image_level_tests(df, pd.DataFrame(rows), n_boot=300).set_index(["method_a", "method_b"])
    gl = tests.loc[("local_de", "global_de")]
    assert gl.n_pairs == 3 and gl.mean_diff == pytest.approx(-0.10)
    assert gl.verdict == "global_de better" and gl.mcnemar_p_max < 1e-6
    ls = tests.loc[("local_de", "sse")]
    assert ls.mean_diff == 0.0 and ls.verdict == "tie (interval contains 0)" and ls.mcnemar_p_min == 1.0


def test_cells_are_chosen_on_the_grid_not_on_confirm_reruns():
    """The confirm phase reruns the chosen cell; its extra runs (here worse on val) count in
    the cell's statistics but do not move the choice."""
    from analysis.aggregate import choose_cells

    df = _table().assign(phase="grid")
    assert choose_cells(df, "star_sse")["best"] == (1.0, 1.0)
    rerun = df[(df.method == "star_sse") & (df.cycle_epochs_ratio == 1.0)].assign(
        phase="confirm", ens_val_acc=0.1, pretrained_index=lambda d: d.pretrained_index + 100,
        trial_id=lambda d: d.trial_id + "-confirm")
    both = pd.concat([df, rerun], ignore_index=True)
    assert choose_cells(both, "star_sse")["best"] == (1.0, 1.0)
    # Unlabelled, the reruns still do not move it: they are on replicates the other cells
    # lack, and cells are compared on the replicates every cell has (shared_replicates).
    assert choose_cells(both.assign(phase="grid"), "star_sse")["best"] == (1.0, 1.0)
    row = paired_differences(both).set_index(["method_a", "method_b"]).loc[("local_de", "star_sse")]
    assert row.n_b == 6 and row.n_pairs == 3  # the reruns have no Local DE partner here


def test_heatmaps_mark_ties_with_local_de_and_between_methods():
    from analysis.heatmaps import cell_labels, diff_heatmap, metric_heatmaps

    df = _table()
    fig, data = metric_heatmaps(df, "ens_test_acc")
    assert data.ties["sse"].loc[1.0, 0.5] is True and data.ties["star_sse"].loc[1.0, 1.0] is False
    labels, _ = cell_labels(data.grids["sse"], data.ties["sse"])
    assert labels.loc[1.0, 0.5].endswith("\n≈ LDE") and "≈" not in labels.loc[1.0, 1.0]
    assert "≈ LDE" in fig._suptitle.get_text()
    _, diff = diff_heatmap(df, "ens_test_acc")
    # StarSSE - SSE at (1, 1): +0.12 in every replicate, not a tie
    assert diff.ties.loc[1.0, 1.0] is False
    assert diff.diff.loc[1.0, 1.0] == pytest.approx(0.12)


# scipy against the hand-written formulas they replaced ---------------------------------
def _t_by_hand(x, level=0.95):
    from scipy import stats

    x = np.asarray(x, float)
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return x.mean() - half, x.mean() + half


def _welch_by_hand(a, b, level=0.95):
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + level / 2, df) * np.sqrt(va + vb)
    d = a.mean() - b.mean()
    return d - half, d + half


def _bootstrap_by_hand(per_image, n_boot=2000, seed=0, level=0.95):
    rng = np.random.default_rng(seed)
    means = per_image[rng.integers(0, per_image.size, size=(n_boot, per_image.size))].mean(axis=1)
    return tuple(np.quantile(means, [0.5 - level / 2, 0.5 + level / 2]))


def test_scipys_intervals_equal_the_hand_written_ones_on_the_committed_table():
    """t and Welch intervals to 1e-12; the image bootstrap to Monte-Carlo error (its two
    resampling streams differ), on the committed paper_cpu table and predictions."""
    from analysis.predictions import correctness, load_predictions, n_test_images

    root = Path(__file__).resolve().parents[1] / "results" / "paper_cpu"
    df = pd.read_parquet(root / "results.parquet")
    last = df[df.snapshot == 5]
    compared = 0
    cells = last.groupby(["method", "lr_max_ratio", "cycle_epochs_ratio"], dropna=False)
    for (method, lr, cyc), group in cells:
        values = group.ens_test_acc.to_numpy()
        if len(values) >= 2 and values.std() > 0:
            iv = t_interval(values)
            assert np.allclose((iv.low, iv.high), _t_by_hand(values), atol=1e-12), (method, lr, cyc)
            compared += 1
    assert compared >= 10
    a = last[last.method == "sse"].ens_test_acc.to_numpy()
    b = last[last.method == "local_de"].ens_test_acc.to_numpy()
    iv = welch_interval(a, b)
    assert np.allclose((iv.low, iv.high), _welch_by_hand(a, b), atol=1e-12)

    pred = load_predictions(root / "results.parquet")
    n = n_test_images(pred)
    rows = pred[pred.snapshot == 5]
    xa = correctness(rows[rows.method == "sse"].iloc[0]["ens_test_correct"], n)
    xb = correctness(rows[rows.method == "local_de"].iloc[0]["ens_test_correct"], n)
    ours = paired_bootstrap(xa, xb, n_boot=4000)
    low, high = _bootstrap_by_hand(xa.astype(float) - xb.astype(float), n_boot=4000)
    se = ours.std  # the bootstrap's standard error: bounds agree to a fraction of it
    assert abs(ours.low - low) < 0.25 * se and abs(ours.high - high) < 0.25 * se, (ours, low, high)


def _two_way_by_hand(a, b, n_boot=1500, seed=1, level=0.95):
    """The two-way bootstrap written out: draw replicates, then images within each drawn one."""
    rng = np.random.default_rng(seed)
    n_rep, n_img = a.shape
    stat = np.empty(n_boot)
    for i in range(n_boot):
        reps = rng.integers(0, n_rep, n_rep)
        stat[i] = np.mean([(a[r, idx].astype(float) - b[r, idx]).mean()
                           for r in reps for idx in [rng.integers(0, n_img, n_img)]])
    return np.quantile(stat, [(1 - level) / 2, (1 + level) / 2])


def test_two_way_bootstrap_counts_training_noise():
    from analysis.stats import two_way_bootstrap

    rng = np.random.default_rng(0)
    n_img = 800
    # five paired replicates whose true gaps differ (training noise): +4, +1, -2, +3, 0 points
    gaps = [0.04, 0.01, -0.02, 0.03, 0.0]
    b = rng.random((5, n_img)) < 0.8
    a = np.stack([np.where(rng.random(n_img) < abs(g), g > 0, row) | (row & (g >= 0))
                  for g, row in zip(gaps, b, strict=True)])
    two = two_way_bootstrap(a, b)
    fixed = paired_bootstrap(a, b)
    lo, hi = _two_way_by_hand(a, b)
    assert two.mean == pytest.approx((a.astype(float) - b).mean())
    assert (two.low, two.high) == pytest.approx((lo, hi), abs=0.004)  # Monte-Carlo error
    assert two.high - two.low > 1.5 * (fixed.high - fixed.low)  # the models held fixed: narrower
    one = two_way_bootstrap(a[:1], b[:1])  # one replicate: the image bootstrap
    alone = paired_bootstrap(a[:1], b[:1])
    assert (one.low, one.high) == pytest.approx((alone.low, alone.high), abs=0.004)


def test_cells_and_methods_are_compared_on_shared_replicates():
    """A cell re-run on more replicates (a confirm phase) is averaged over the replicates every
    cell has in a method's grid, and two methods' cells over the replicates both ran."""
    from analysis.aggregate import metric_grid
    from analysis.stats import paired_cell_differences

    df = _table().assign(phase="grid")
    extra = df[(df.method == "star_sse") & (df.cycle_epochs_ratio == 1.0)].assign(
        phase="confirm", ens_test_acc=0.0, pretrained_index=lambda d: d.pretrained_index + 100,
        trial_id=lambda d: d.trial_id + "-confirm")
    both = pd.concat([df, extra], ignore_index=True)
    k = int(df.snapshot.max())
    assert metric_grid(both, "star_sse", "ens_test_acc").mean.equals(
        metric_grid(df, "star_sse", "ens_test_acc").mean)
    assert paired_cell_differences(both, "star_sse", "sse", "ens_test_acc", k).equals(
        paired_cell_differences(df, "star_sse", "sse", "ens_test_acc", k))


def test_the_summary_ranks_every_method_at_one_k():
    from analysis.synthetic import synthetic_results

    df = synthetic_results()
    short = df[~((df.method == "local_de") & (df.snapshot > 3))]  # Local DE reached K = 3 only
    summary = summary_table(short)
    assert set(summary["k"]) == {3}
    assert summary_table(short, k=5).set_index("method").loc["local_de", "n_runs"] == 0
