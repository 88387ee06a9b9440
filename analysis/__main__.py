"""Command line of the analysis package.

    python -m analysis report RESULTS --out DIR [--size K]
                              [--mlflow-uri URI --mlflow-experiment NAME]
    python -m analysis demo --out DIR
    python -m analysis connectivity LEDGER --out DIR [--points N]

`report` reads RESULTS (a .parquet file or a directory holding results.parquet),
writes every figure as PNG and SVG, summary.md/.csv and index.html into DIR and
prints the path of index.html. `demo` does the same on a synthetic table (a
preview of the report without a sweep). Bad input prints a message and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sweep.layout import SweepLayout


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Turn a starsweep results table into heatmaps, curves and tables.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser(
        "report",
        help="write the report for a results table",
        description="Write every figure (PNG + SVG), summary.md/.csv and index.html.",
    )
    rep.add_argument(
        "results", help="results .parquet file, or a directory holding results.parquet "
        "(a local path or a URI: s3://bucket/runs/NAME)"
    )
    rep.add_argument("--out", type=Path, required=True, help="output directory")
    rep.add_argument(
        "--size",
        type=_positive_int,
        default=None,
        metavar="K",
        help="ensemble size K (default: the largest snapshot of each method)",
    )
    rep.add_argument(
        "--mlflow-uri",
        default=None,
        help="also log the report to MLflow at this tracking URI (sqlite:///...)",
    )
    rep.add_argument(
        "--mlflow-experiment",
        default="starsweep",
        help="MLflow experiment of the 'report' run (default: starsweep). Without --mlflow-uri, "
        "a sweep directory's own MLflow experiment (from its sweep.json) is used",
    )
    demo = sub.add_parser(
        "demo",
        help="write a report of a synthetic results table",
        description="Write a synthetic results.parquet into DIR and its report next to it.",
    )
    demo.add_argument("--out", type=Path, required=True, help="output directory")
    conn = sub.add_parser(
        "connectivity",
        help="accuracy/loss along the line from the first model to each snapshot",
        description="Evaluate saved snapshots along straight lines (BatchNorm re-estimated "
        "at every point) and plot them (the paper's Figure 2).",
    )
    conn.add_argument(
        "trial", help="a trial's ledger: <sweep>/ledgers/<phase>/<trial_id> (a path or URI)"
    )
    conn.add_argument("--out", type=Path, required=True, help="output directory")
    conn.add_argument("--points", type=_positive_int, default=11, help="points per segment")
    return parser


def run(args: argparse.Namespace) -> Path:
    from analysis.report import attach_to_mlflow, build_report

    if args.command == "connectivity":
        from analysis.connectivity import write_connectivity

        return write_connectivity(args.trial, args.out, args.points)
    if args.command == "demo":
        from analysis.synthetic import synthetic_results

        args.out.mkdir(parents=True, exist_ok=True)
        results = args.out / SweepLayout.results
        synthetic_results().to_parquet(results, index=False)
        return build_report(results, args.out)
    index = build_report(args.results, args.out, args.size)
    uri, experiment, sweep = args.mlflow_uri, args.mlflow_experiment, None
    if uri is None:
        uri, experiment, sweep = _sweep_mlflow(args.results)
    if uri:
        try:
            run_id = attach_to_mlflow(args.out, uri, experiment, sweep=sweep)
            if args.mlflow_uri is None:
                _push_store(args.results, uri)
            print(f"report logged to MLflow run {run_id} ({uri})", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - the report on disk is what matters
            print(f"warning: could not log the report to MLflow at {uri}: {exc}", file=sys.stderr)
    return index


def _sweep_mlflow(results: str) -> tuple[str | None, str | None, str | None]:
    """The tracking URI, experiment and name of a sweep directory (from its sweep.json), if
    any; a sweep in object storage gets its SQLite store copied to this machine first."""
    import json

    from sweep import mlflow_mirror
    from sweep.manifest import tracking_uri_of
    from trainables import storage

    try:
        sweep_dir = storage.parent(results) if storage.is_file(results) else results
        data = json.loads(storage.read_bytes(SweepLayout(sweep_dir).manifest))
    except (OSError, ValueError):
        return None, None, None
    if not data.get("mlflow_experiment"):
        return None, None, None
    uri = tracking_uri_of(data, sweep_dir)
    mlflow_mirror.pull(SweepLayout(sweep_dir), uri)
    return uri, data["mlflow_experiment"], data.get("name")


def _push_store(results: str, uri: str) -> None:
    """A sweep in object storage: its store's copy gets the report run too."""
    from sweep import mlflow_mirror
    from trainables import storage

    sweep_dir = storage.parent(results) if storage.is_file(results) else results
    mlflow_mirror.push(SweepLayout(sweep_dir), uri)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        index = run(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
