"""analysis: loading, aggregation (grids, baselines, curves, cell choice) and tables.

Every check compares with values known from the synthetic table's formulas
(analysis/synthetic.py), restated here: the seed noise cancels in every mean.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import aggregate as agg
from analysis.load import REQUIRED_COLUMNS, load_results
from analysis.synthetic import partial_sweep, synthetic_results
from analysis.tables import format_summary, summary_markdown, write_summary

LRS = [0.25, 0.5, 1.0, 2.0, 4.0]
CYCLES = [0.5, 1.0, 2.0, 4.0]
NOISE_STD = float(np.std([0.002, -0.002, -0.002, 0.002], ddof=1))
RECORD_COLUMNS = [
    "snapshot", "num_snapshots", "diverged", "epochs_done", "wall_time_s",
    "div_disagree_first", "div_fort", "dist_pretrained", "dist_first",
    "sweep", "trial_id", "status", "method", "lr_max", "cycle_epochs", "lr_max_ratio",
    "cycle_epochs_ratio", "num_cycles", "num_members", "seed", "pretrained_index",
    "finetune_lr", "finetune_epochs",
]  # fmt: skip


def ens_acc(method: str, i: int, j: int, k: int = 5) -> float:
    value = 0.80 + 0.01 * i - 0.005 * j + 0.004 * (k - 1)
    return value + (0.002 + 0.001 * j if method == "star_sse" else 0.0)


def expected_grid(fn) -> np.ndarray:
    return np.array([[fn(i, j) for j in range(len(CYCLES))] for i in range(len(LRS))])


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return synthetic_results()


def test_synthetic_table_has_every_record_column(results):
    kinds = [
        f"{kind}_{split}_{m}"
        for kind in ("ind", "ens", "soup")
        for split in ("val", "test", "ood")
        for m in ("acc", "nll", "ece", "brier")
    ]
    per_corruption = [f"ens_ood_{m}__gaussian_noise" for m in ("acc", "nll")]
    missing = set(RECORD_COLUMNS + kinds + per_corruption) - set(results.columns)
    assert not missing
    counts = results.groupby("method")["trial_id"].nunique()
    assert counts.to_dict() == {"sse": 80, "star_sse": 80, "local_de": 4, "global_de": 4}
    assert results.groupby("trial_id")["snapshot"].max().eq(5).all()


def test_load_reads_file_and_directory(results, tmp_path):
    results.to_parquet(tmp_path / "results.parquet", index=False)
    from_dir = load_results(tmp_path)
    from_file = load_results(tmp_path / "results.parquet")
    assert len(from_dir) == len(from_file) == len(results)
    assert from_dir["snapshot"].dtype.kind == "i"


@pytest.mark.parametrize("case", ["missing", "empty_dir", "garbage", "columns"])
def test_load_errors_name_the_path(results, tmp_path, case):
    path = tmp_path / "results.parquet"
    if case == "missing":
        target, needle = tmp_path / "nope.parquet", "nope.parquet"
    elif case == "empty_dir":
        target, needle = tmp_path, str(tmp_path)
    elif case == "garbage":
        path.write_bytes(b"not a parquet file")
        target, needle = path, str(path)
    else:
        results.drop(columns=["ens_val_acc", "status"]).to_parquet(path)
        target, needle = path, "ens_val_acc"
    with pytest.raises(ValueError, match="results table") as info:
        load_results(target)
    assert needle in str(info.value)
    if case == "columns":
        assert "status" in str(info.value) and str(path) in str(info.value)
    assert set(REQUIRED_COLUMNS) <= set(results.columns)


@pytest.mark.parametrize("method", ["sse", "star_sse"])
@pytest.mark.parametrize("k", [None, 3])
def test_metric_grid_means_counts_and_axes(results, method, k):
    grid = agg.metric_grid(results, method, "ens_test_acc", k)
    size = 5 if k is None else k
    assert grid.k == size
    assert list(grid.mean.index) == LRS and list(grid.mean.columns) == CYCLES
    expected = expected_grid(lambda i, j: ens_acc(method, i, j, size))
    np.testing.assert_allclose(grid.mean.to_numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(grid.std.to_numpy(), NOISE_STD, rtol=1e-6)
    assert (grid.count.to_numpy() == 4).all() and (grid.diverged.to_numpy() == 0).all()
    np.testing.assert_allclose(grid.lr_max.to_numpy(), [0.005, 0.01, 0.02, 0.04, 0.08])
    np.testing.assert_allclose(grid.cycle_epochs.to_numpy(), [5, 10, 20, 40])


def test_partial_grid_blanks_unfinished_and_diverged(results):
    d = partial_sweep(results)
    sse = agg.metric_grid(d, "sse", "ens_test_acc")
    star = agg.metric_grid(d, "star_sse", "ens_test_acc")
    assert sse.k == star.k == 5
    # dropped cell: blank, count 0, not diverged
    assert np.isnan(sse.mean.loc[4.0, 4.0]) and sse.count.loc[4.0, 4.0] == 0
    assert sse.diverged.loc[4.0, 4.0] == 0
    # unfinished cell: blank at K=5, present at K=3
    assert np.isnan(star.mean.loc[0.25, 0.5]) and star.count.loc[0.25, 0.5] == 0
    star3 = agg.metric_grid(d, "star_sse", "ens_test_acc", 3)
    assert star3.count.loc[0.25, 0.5] == 4
    assert star3.mean.loc[0.25, 0.5] == pytest.approx(ens_acc("star_sse", 0, 0, 3))
    # one diverged trial of four: three remain (noise -, -, + : mean shifts by -0.002/3)
    assert sse.count.loc[1.0, 1.0] == 3 and sse.diverged.loc[1.0, 1.0] == 1
    assert sse.mean.loc[1.0, 1.0] == pytest.approx(ens_acc("sse", 2, 1) - 0.002 / 3)
    # whole cell diverged: no mean, four diverged
    assert np.isnan(sse.mean.loc[0.5, 2.0]) and sse.diverged.loc[0.5, 2.0] == 4
    # before divergence (k=1) the rows still count
    sse1 = agg.metric_grid(d, "sse", "ens_test_acc", 1)
    assert sse1.count.loc[0.5, 2.0] == 4 and sse1.diverged.loc[0.5, 2.0] == 0
    # a trial with status DIVERGED but no flag diverged at its last snapshot
    d2 = d.copy()
    d2["diverged"] = False
    assert agg.metric_grid(d2, "sse", "ens_test_acc").diverged.loc[0.5, 2.0] == 4


def test_baseline_stats_at_size(results):
    base = agg.baseline_stats(results, "ens_test_acc")
    assert list(base.index) == ["local_de", "global_de"]
    assert base.loc["local_de", "mean"] == pytest.approx(0.832)
    assert base.loc["global_de", "mean"] == pytest.approx(0.86)
    assert base["std"].to_numpy() == pytest.approx([NOISE_STD] * 2)
    assert base["count"].tolist() == [4, 4]
    at2 = agg.baseline_stats(results, "ens_test_acc", k=2)
    assert at2["mean"].to_numpy() == pytest.approx([0.823, 0.845])
    assert agg.baseline_stats(results[results["method"] == "sse"], "ens_test_acc").empty


def test_size_curve_per_snapshot(results):
    curve = agg.size_curve(results, "star_sse", "ens_test_acc", (2.0, 0.5))
    assert list(curve.index) == [1, 2, 3, 4, 5]
    expected = [ens_acc("star_sse", 3, 0, k) for k in range(1, 6)]
    np.testing.assert_allclose(curve["mean"], expected)
    np.testing.assert_allclose(curve["std"], NOISE_STD, rtol=1e-6)
    assert curve["count"].tolist() == [4] * 5
    local = agg.size_curve(results, "local_de", "ens_test_acc")
    np.testing.assert_allclose(local["mean"], [0.82 + 0.003 * (k - 1) for k in range(1, 6)])


def test_best_cell_is_chosen_on_validation_not_test(results):
    test_grid = agg.metric_grid(results, "sse", "ens_test_acc").mean
    assert test_grid.stack().idxmax() == (4.0, 0.5)  # the test-best cell
    cells = agg.choose_cells(results, "sse")
    assert cells == {"most_local": (0.25, 0.5), "best": (1.0, 1.0), "most_semi_local": (4.0, 4.0)}
    other = synthetic_results(methods=("star_sse",), val_best=(0, 3), val_bump=0.1)
    assert agg.choose_cells(other, "star_sse")["best"] == (0.25, 4.0)


def test_choose_cells_skips_cells_without_data(results):
    d = partial_sweep(results)
    cells = agg.choose_cells(d, "sse")
    assert cells["most_semi_local"] == (4.0, 2.0)  # (4, 4) was dropped
    assert agg.choose_cells(d, "star_sse")["most_local"] == (0.25, 1.0)  # (0.25, 0.5) unfinished
    assert agg.choose_cells(results, "sse", k=9) == {}


def test_summary_table_values_and_ranking(results):
    summary = agg.summary_table(results).set_index("method")
    assert agg.ranking(summary.reset_index()) == ["global_de", "star_sse", "local_de", "sse"]
    assert summary["rank"].to_dict() == {"global_de": 1, "star_sse": 2, "local_de": 3, "sse": 4}
    star = summary.loc["star_sse"]
    assert (star["lr_max_ratio"], star["cycle_epochs_ratio"]) == (1.0, 1.0)
    assert (star["lr_max"], star["cycle_epochs"]) == pytest.approx((0.02, 10.0))
    expected = {
        "star_sse": {"ens_test_acc": 0.834, "ens_test_nll": 0.545, "ens_test_ece": 0.055,
                     "ens_ood_acc": 0.634, "soup_test_acc": 0.835, "ens_val_acc": 0.894},
        "sse": {"ens_test_acc": 0.831, "ens_test_nll": 0.545, "ens_test_ece": 0.055,
                "ens_ood_acc": 0.631, "soup_test_acc": 0.811, "ens_val_acc": 0.891},
        "local_de": {"ens_test_acc": 0.832, "ens_test_nll": 0.51, "ens_test_ece": 0.04,
                     "ens_ood_acc": 0.632, "soup_test_acc": 0.812},
        "global_de": {"ens_test_acc": 0.86, "ens_test_nll": 0.51, "ens_test_ece": 0.04,
                      "ens_ood_acc": 0.66, "soup_test_acc": 0.40},
    }  # fmt: skip
    for method, values in expected.items():
        row = summary.loc[method]
        assert row["n_runs"] == 4 and row["k"] == 5
        for metric, value in values.items():
            assert row[f"{metric}_mean"] == pytest.approx(value), (method, metric)
            assert row[f"{metric}_std"] == pytest.approx(NOISE_STD, rel=1e-6)
    assert np.isnan(summary.loc["local_de", "lr_max_ratio"])


def test_summary_of_partial_and_empty_tables(results):
    d = partial_sweep(results)
    summary = agg.summary_table(d).set_index("method")
    assert summary.loc["sse", "n_runs"] == 3 and summary.loc["sse", "n_diverged"] == 1
    only_base = agg.summary_table(results[results["method"].isin(["local_de"])])
    assert only_base["method"].tolist() == ["local_de"] and only_base["rank"].tolist() == [1]
    empty = agg.summary_table(results.iloc[0:0])
    assert empty.empty and summary_markdown(empty).count("\n") == 2
    beyond = agg.summary_table(results, k=9)
    assert beyond["n_runs"].eq(0).all() and beyond["rank"].isna().all()


def test_tables_markdown_and_csv(results, tmp_path):
    summary = agg.summary_table(results)
    table = format_summary(summary)
    star = table[table["Method"] == "StarSSE"].iloc[0]
    assert star["Rank"] == "2" and star["Test acc (%)"] == "83.40 ± 0.23"
    assert star["Best cell (on val)"] == "lr 0.02 (×1), cycle 10 (×1)"
    assert star["Soup test acc (%)"] == "83.50 ± 0.23" and star["Test NLL"] == "0.545 ± 0.002"
    md_path, csv_path = write_summary(summary, tmp_path)
    md = md_path.read_text(encoding="utf-8").splitlines()
    assert md[0].startswith("| Rank | Method |") and len(md) == 2 + 4
    assert md[2].startswith("| 1 | Global DE |") and "| 86.00 ± 0.23 |" in md[2]
    back = pd.read_csv(csv_path)
    assert back["method"].tolist() == ["global_de", "star_sse", "local_de", "sse"]
    np.testing.assert_allclose(back["ens_test_acc_mean"], [0.86, 0.834, 0.832, 0.831])
