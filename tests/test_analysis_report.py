"""analysis report, CLI and MLflow attachment, on full and partial synthetic sweeps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.report import attach_to_mlflow, build_report
from analysis.synthetic import partial_sweep, synthetic_results

REPO = Path(__file__).resolve().parents[1]
FIGURES = [
    *(f"heatmap_{m}" for m in ("ens_test_acc", "soup_test_acc", "ind_test_acc", "ens_test_nll",
                               "ens_test_ece", "ens_ood_acc")),
    "diff_ens_test_acc", "diff_soup_test_acc",
    "curve_ens_test_acc", "curve_ind_test_acc", "curve_soup_vs_ens", "compute_ens_test_acc",
]  # fmt: skip


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return synthetic_results()


@pytest.fixture(scope="module")
def cli_report(results, tmp_path_factory) -> tuple[Path, int, str]:
    """The full report written by the CLI from a results directory."""
    root = tmp_path_factory.mktemp("cli")
    results.to_parquet(root / "results.parquet", index=False)
    out = root / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", "report", str(root), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return out, proc.returncode, proc.stdout + proc.stderr


def test_cli_writes_png_svg_and_index(cli_report):
    out, code, output = cli_report
    assert code == 0, output
    assert output.strip() == str(out / "index.html")
    for stem in FIGURES:
        for ext in ("png", "svg"):
            path = out / f"{stem}.{ext}"
            assert path.is_file() and path.stat().st_size > 1000, path
    assert (out / "heatmap_ens_test_acc.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (out / "heatmap_ens_test_acc.svg").read_bytes()[:2000]
    index = (out / "index.html").read_text(encoding="utf-8")
    for stem in FIGURES:
        assert f'src="{stem}.png"' in index and f'href="{stem}.svg"' in index
    assert "83.40 ± 0.23" in index and "lr 0.02 (×1), cycle 10 (×1)" in index
    assert "Left out" not in index
    from html.parser import HTMLParser

    class Tables(HTMLParser):  # the paired tables are HTML tables, never pipe text in <pre>
        pre, tables = [], 0

        def handle_starttag(self, tag, attrs):
            self.tables += tag == "table"
            if tag == "pre":
                self.pre.append("")

        def handle_data(self, data):
            if self.pre:
                self.pre[-1] += data

    parsed = Tables()
    parsed.feed(index)
    assert not any("|" in text for text in parsed.pre) and parsed.tables >= 2
    summary = pd.read_csv(out / "summary.csv")
    assert summary["method"].tolist() == ["global_de", "star_sse", "local_de", "sse"]
    assert set(summary["k"]) == {5} and "K = 5 (the largest K every method reached)" in index
    assert "Equal compute" in index and (out / "compute.md").read_text().startswith("| epochs |")
    assert (out / "summary.md").read_text(encoding="utf-8").startswith("| Rank |")


def test_cli_missing_file_exits_2_without_traceback(tmp_path):
    missing = tmp_path / "nowhere.parquet"
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", "report", str(missing), "--out", str(tmp_path / "o")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "nowhere.parquet" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_cli_in_process_errors_and_help(results, tmp_path, capsys):
    bad = tmp_path / "results.parquet"
    results.drop(columns=["method"]).to_parquet(bad)
    assert main(["report", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "method" in err and str(bad) in err
    with pytest.raises(SystemExit) as info:
        main(["report", str(bad), "--out", str(tmp_path), "--size", "0"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["report", "--help"])
    assert info.value.code == 0
    assert "--size" in capsys.readouterr().out


def test_cli_size_option(results, tmp_path, capsys):
    path = tmp_path / "r.parquet"
    results[results["method"].isin(["local_de", "global_de"])].to_parquet(path, index=False)
    assert main(["report", str(path), "--out", str(tmp_path / "o"), "--size", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "o" / "index.html")
    summary = pd.read_csv(tmp_path / "o" / "summary.csv").set_index("method")
    assert summary["k"].eq(3).all()
    assert summary.loc["local_de", "ens_test_acc_mean"] == pytest.approx(0.826)


def test_partial_report_shows_blanks_and_left_out_figures(results, tmp_path):
    index = build_report(partial_sweep(results), tmp_path / "partial")
    assert index.is_file() and (tmp_path / "partial" / "heatmap_ens_test_acc.svg").is_file()
    svg = (tmp_path / "partial" / "heatmap_ens_test_acc.svg").read_text(encoding="utf-8")
    assert "div" in svg
    summary = pd.read_csv(tmp_path / "partial" / "summary.csv").set_index("method")
    assert summary.loc["sse", "n_diverged"] == 1 and summary.loc["sse", "n_runs"] == 3


@pytest.mark.parametrize(
    "methods, present, absent",
    [
        (("local_de", "global_de"), ["curve_ens_test_acc"],
         ["heatmap_ens_test_acc", "diff_ens_test_acc"]),
        (("sse",), ["heatmap_ens_test_acc", "curve_soup_vs_ens"], ["diff_ens_test_acc"]),
        ((), [], ["heatmap_ens_test_acc", "curve_ens_test_acc"]),
    ],
)  # fmt: skip
def test_report_of_a_subset_of_methods(results, tmp_path, methods, present, absent):
    index = build_report(results[results["method"].isin(methods)], tmp_path)
    for stem in present:
        assert (tmp_path / f"{stem}.png").is_file()
    for stem in absent:
        assert not (tmp_path / f"{stem}.png").exists()
    html = index.read_text(encoding="utf-8")
    assert "Left out" in html and "summary.csv" in html


def test_report_beyond_largest_snapshot_does_not_crash(tmp_path):
    small = synthetic_results(("local_de", "star_sse"), (1.0, 2.0), (1.0,), snapshots=2)
    index = build_report(small, tmp_path, size=4)
    assert index.is_file() and (tmp_path / "heatmap_ens_test_acc.png").is_file()
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary["n_runs"].eq(0).all()


def test_attach_to_mlflow_logs_the_report(cli_report, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # any default artifact root lands in tmp_path
    out = cli_report[0]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = attach_to_mlflow(out, uri, "starsweep-test")
    again = attach_to_mlflow(out, uri, "starsweep-test")  # reuses the experiment
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "report" and run.info.status == "FINISHED"
    experiment = client.get_experiment_by_name("starsweep-test")
    assert run.info.experiment_id == experiment.experiment_id
    assert client.get_run(again).info.experiment_id == experiment.experiment_id
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"index.html", "summary.csv", "heatmap_ens_test_acc.png"} <= names
    local = client.download_artifacts(run_id, "index.html", str(tmp_path))
    assert Path(local).read_text(encoding="utf-8") == (out / "index.html").read_text("utf-8")
    with pytest.raises(ValueError, match="not found"):
        attach_to_mlflow(tmp_path / "missing", uri, "starsweep-test")


def _drawn_texts(fig):
    """The texts a figure draws: its title, each axes' titles, axis labels, annotations, legend
    entries and the tick labels of ticks inside the view (Matplotlib keeps, undrawn, labels of
    ticks outside it)."""
    texts = [fig._suptitle] if fig._suptitle is not None else []
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        if ax.get_legend() is not None:
            texts += ax.get_legend().get_texts()
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            texts += [t.label1 for t in axis.get_major_ticks()
                      if low - 1e-9 <= t.get_loc() <= high + 1e-9 and t.label1.get_visible()]
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


@pytest.mark.parametrize("which", ["full", "one_cycle_length", "paper_cpu"])
def test_every_title_and_label_fits_inside_its_figure(results, which):
    """No text of any report figure (titles, labels, legends, tick labels) reaches past the
    figure's edges, on the synthetic sweep and on the committed paper_cpu table."""
    from analysis.load import load_results
    from analysis.report import plan_figures

    df = {"full": lambda: results,
          "one_cycle_length": lambda: results[results.cycle_epochs_ratio.isna()
                                              | results.cycle_epochs_ratio.eq(1.0)],
          "paper_cpu": lambda: load_results(REPO / "results/paper_cpu/results.parquet")}[which]()
    figures, _ = plan_figures(df)  # a narrow grid (one cycle length) gives the narrowest figures
    assert len(figures) == len(FIGURES)
    for spec in figures:
        fig, _ = spec.draw()
        fig.canvas.draw()
        renderer, box = fig.canvas.get_renderer(), fig.bbox
        texts = _drawn_texts(fig)
        assert fig._suptitle in texts or spec.stem.startswith("compute"), spec.stem
        for text in texts:
            ext = text.get_window_extent(renderer)
            inside = (ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1
                      and ext.y0 >= box.y0 - 1 and ext.y1 <= box.y1 + 1)
            assert inside, f"{spec.stem}: {text.get_text()!r} at {ext} outside the figure {box}"


def test_fge_and_swa_are_drawn_like_the_other_cyclic_methods(tmp_path):
    """FGE and SWA (issue 26) get their heatmap panels, curves and summary rows, and a row of
    the paired table against SSE, as every cyclic method does."""
    table = synthetic_results(("sse", "star_sse", "fge", "swa", "local_de"), (1.0, 2.0), (0.5, 1.0),
                              snapshots=3)
    index = build_report(table, tmp_path)
    html = index.read_text(encoding="utf-8")
    assert "FGE" in html and "SWA" in html
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("method")
    assert {"fge", "swa"} <= set(summary.index) and summary.loc[["fge", "swa"], "n_runs"].gt(0).all()
    paired = pd.read_csv(tmp_path / "paired.csv")
    pairs = set(zip(paired.method_a, paired.method_b, strict=True))
    assert {("sse", "fge"), ("sse", "swa"), ("fge", "swa")} <= pairs | {(b, a) for a, b in pairs}, pairs
