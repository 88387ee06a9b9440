"""analysis heatmaps and curves: the plotted arrays equal the synthetic table's known values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.curves import ensemble_size_curves, individual_curves, soup_vs_ensemble_curves
from analysis.heatmaps import diff_heatmap, metric_heatmaps
from analysis.synthetic import partial_sweep, synthetic_results

LRS = [0.25, 0.5, 1.0, 2.0, 4.0]
CYCLES = [0.5, 1.0, 2.0, 4.0]
NOISE_STD = float(np.std([0.002, -0.002, -0.002, 0.002], ddof=1))


def ens(method, i, j, k=5):
    return (
        0.80
        + 0.01 * i
        - 0.005 * j
        + 0.004 * (k - 1)
        + (0.002 + 0.001 * j if method == "star_sse" else 0.0)
    )


# Known cell means at K=5 (i = lr index, j = cycle index) and baseline means.
EXPECTED = {
    "ens_test_acc": (ens, {"local_de": 0.832, "global_de": 0.86}),
    "soup_test_acc": (
        lambda m, i, j: ens(m, i, j) + (-0.01 * i if m == "sse" else 0.005 - 0.002 * i),
        {"local_de": 0.812, "global_de": 0.40},
    ),
    "ind_test_acc": (
        lambda m, i, j: 0.78 + 0.01 * i - 0.005 * j - 0.008 * i,
        {"local_de": 0.81, "global_de": 0.81},
    ),
    "ens_test_nll": (
        lambda m, i, j: 0.60 - 0.01 * i + 0.005 * j - 0.04,
        {"local_de": 0.51, "global_de": 0.51},
    ),
    "ens_test_ece": (
        lambda m, i, j: 0.05 + 0.002 * i + 0.001 * j,
        {"local_de": 0.04, "global_de": 0.04},
    ),
    "ens_ood_acc": (
        lambda m, i, j: ens(m, i, j) - 0.2,
        {"local_de": 0.632, "global_de": 0.66},
    ),
}


def grid_of(fn, method) -> np.ndarray:
    return np.array([[fn(method, i, j) for j in range(len(CYCLES))] for i in range(len(LRS))])


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return synthetic_results()


def colorbar_lines(fig) -> list[float]:
    return sorted(float(line.get_ydata()[0]) for line in fig.axes[-1].lines)


@pytest.mark.parametrize("metric", list(EXPECTED))
def test_heatmap_arrays_shared_scale_and_baseline_marks(results, metric):
    fn, baselines = EXPECTED[metric]
    fig, data = metric_heatmaps(results, metric)
    assert list(data.grids) == ["sse", "star_sse"]
    expected = {m: grid_of(fn, m) for m in data.grids}
    for method, grid in data.grids.items():
        np.testing.assert_allclose(grid.mean.to_numpy(), expected[method], atol=1e-12)
        assert (grid.count.to_numpy() == 4).all()
    everything = np.concatenate([e.ravel() for e in expected.values()])
    assert data.vmin == pytest.approx(everything.min())
    assert data.vmax == pytest.approx(everything.max())
    panels = fig.axes[:2]
    for ax, method in zip(panels, data.grids, strict=True):
        image = ax.images[0]
        np.testing.assert_allclose(image.get_array(), expected[method], atol=1e-12)
        assert (image.norm.vmin, image.norm.vmax) == (data.vmin, data.vmax)
    assert data.baselines == pytest.approx(baselines)
    clamped = [min(max(v, data.vmin), data.vmax) for v in baselines.values()]
    assert colorbar_lines(fig) == pytest.approx(sorted(clamped))


def test_heatmap_annotations_and_tick_labels(results):
    fig, _ = metric_heatmaps(results, "ens_test_acc")
    sse_ax = fig.axes[0]
    texts = {t.get_text() for t in sse_ax.texts}
    assert "83.10\nn=4" in texts  # sse cell lr 1, cycle 1
    assert [t.get_text() for t in sse_ax.get_yticklabels()][3] == "0.04 (×2)"
    assert [t.get_text() for t in sse_ax.get_xticklabels()][0] == "5 (×0.5)"
    cbar_texts = [t.get_text() for t in fig.axes[-1].texts]
    assert "Local DE 83.20" in cbar_texts and "Global DE 86.00 ↑" in cbar_texts


def test_heatmap_at_chosen_size(results):
    _, data = metric_heatmaps(results, "ens_test_acc", k=2)
    np.testing.assert_allclose(
        data.grids["star_sse"].mean.to_numpy(),
        grid_of(lambda m, i, j: ens(m, i, j, 2), "star_sse"),
    )
    assert data.baselines == pytest.approx({"local_de": 0.823, "global_de": 0.845})


def test_diff_heatmap_is_star_minus_sse_on_zero_centred_scale(results):
    fig, data = diff_heatmap(results, "ens_test_acc")
    expected = np.array([[0.002 + 0.001 * j for j in range(4)] for _ in range(5)])
    np.testing.assert_allclose(data.diff.to_numpy(), expected, atol=1e-12)
    sse, star = data.grids["sse"].mean, data.grids["star_sse"].mean
    np.testing.assert_allclose(data.diff.to_numpy(), (star - sse).to_numpy())
    assert data.limit == pytest.approx(0.005) and data.vmin == -data.vmax
    image = fig.axes[0].images[0]
    assert image.norm.vmin == pytest.approx(-0.005) and image.norm.vmax == pytest.approx(0.005)
    assert image.cmap.name.startswith("RdBu")
    assert "+0.50" in {t.get_text() for t in fig.axes[0].texts}


def test_partial_heatmap_blanks_and_diverged_cells(results):
    d = partial_sweep(results)
    fig, data = metric_heatmaps(d, "ens_test_acc")
    sse = data.grids["sse"]
    assert np.isnan(sse.mean.loc[4.0, 4.0]) and sse.count.loc[4.0, 4.0] == 0
    assert sse.diverged.loc[0.5, 2.0] == 4 and np.isnan(sse.mean.loc[0.5, 2.0])
    assert np.isnan(data.grids["star_sse"].mean.loc[0.25, 0.5])
    sse_ax, star_ax = fig.axes[:2]
    texts = [t.get_text() for t in sse_ax.texts]
    assert "div\n(n=4)" in texts
    assert any(t.startswith("83.03\nn=3, 1 div") for t in texts)
    assert sum(p.get_hatch() == "///" for p in sse_ax.patches) == 1
    assert np.ma.is_masked(sse_ax.images[0].get_array()[4, 3])  # blank, not hatched
    assert len(star_ax.texts) == 19  # 20 cells, one blank
    _, diff = diff_heatmap(d, "ens_test_acc")
    assert bool(diff.diverged.loc[0.5, 2.0]) and np.isnan(diff.diff.loc[4.0, 4.0])
    assert not bool(diff.diverged.loc[4.0, 4.0])


def test_heatmap_of_one_method_has_one_panel(results):
    only = results[results["method"].isin(["star_sse"])]
    fig, data = metric_heatmaps(only, "ens_test_acc")
    assert list(data.grids) == ["star_sse"] and data.baselines == {}
    assert len(fig.axes) == 2  # one panel + colour bar
    with pytest.raises(ValueError, match="sse"):
        diff_heatmap(only)
    with pytest.raises(ValueError):
        metric_heatmaps(results[results["method"] == "local_de"], "ens_test_acc")


def test_ensemble_size_curves(results):
    fig, data = ensemble_size_curves(results)
    assert data.cells["sse"] == {
        "most_local": (0.25, 0.5), "best": (1.0, 1.0), "most_semi_local": (4.0, 4.0)
    }  # fmt: skip
    ks = range(1, 6)
    cells = {"most_local": (0, 0), "best": (2, 1), "most_semi_local": (4, 3)}
    for method in ("sse", "star_sse"):
        for role, (i, j) in cells.items():
            curve = data.curves[method][role]["ens_test_acc"]
            np.testing.assert_allclose(curve["mean"], [ens(method, i, j, k) for k in ks])
            np.testing.assert_allclose(curve["std"], NOISE_STD, rtol=1e-6)
    local = data.curves["local_de"]["all"]["ens_test_acc"]["mean"]
    np.testing.assert_allclose(local, [0.82 + 0.003 * (k - 1) for k in ks])
    plotted = [tuple(np.round(line.get_ydata(), 6)) for line in fig.axes[0].lines]
    assert tuple(np.round([ens("sse", 2, 1, k) for k in ks], 6)) in plotted
    assert tuple(np.round([0.84 + 0.005 * (k - 1) for k in ks], 6)) in plotted
    assert len(fig.axes[0].collections) == 5  # a std band per line


def test_individual_and_soup_curves(results):
    _, ind = individual_curves(results)
    curve = ind.curves["sse"]["most_semi_local"]["ind_test_acc"]["mean"]
    np.testing.assert_allclose(curve, [0.78 + 0.04 - 0.015 - 0.008 * (k - 1) for k in range(1, 6)])
    fig, soup = soup_vs_ensemble_curves(results)
    best = soup.curves["star_sse"]["best"]
    np.testing.assert_allclose(
        best["soup_test_acc"]["mean"] - best["ens_test_acc"]["mean"], 0.005 - 0.004
    )
    assert set(soup.curves["global_de"]["all"]) == {"ens_test_acc"}
    labels = fig.axes[1].get_legend_handles_labels()[1]
    assert "best (val): soup" in labels and "Global DE: ensemble" in labels


def test_curves_of_partial_and_baseline_only_tables(results):
    d = partial_sweep(results)
    _, data = ensemble_size_curves(d)
    best = data.curves["sse"]["best"]["ens_test_acc"]
    assert best["count"].tolist() == [4, 4, 3, 3, 3]  # the diverged trial leaves at k=3
    fig, base = ensemble_size_curves(results[results["method"].isin(["local_de", "global_de"])])
    assert base.cells == {} and len(fig.axes) == 1 and set(base.curves) == {"local_de", "global_de"}
    fig, beyond = individual_curves(results, k=9)
    assert beyond.cells == {"sse": {}, "star_sse": {}}
    assert "no cell has runs at size K" in {t.get_text() for t in fig.axes[0].texts}
