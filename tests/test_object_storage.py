"""A sweep whose storage is an S3 bucket (a moto server on 127.0.0.1, started and stopped
here): Tune's experiments and checkpoints, the results table, the manifest, the embedded
pre-trained checkpoints and the shared fine-tunes all live in the bucket; the SQLite
MLflow store stays on the driver's disk and is copied into the bucket. The CLI commands
and the analysis report take the s3:// URI. Plus the storage layer's own behaviour and
its errors, on the same server."""

from __future__ import annotations

import copy
import io
import json
import os

import pandas as pd
import pytest
import torch
from s3_server import s3_server

from mlflow_checks import trial_runs
from sweep.cli import main as cli_main
from sweep.layout import SweepLayout
from sweep.runner import resume_sweep, run_sweep
from sweep.spec import SpecError, parse_spec
from tiny import tiny_trial
from trainables import storage
from trainables.errors import StorageError

BUCKET = "sweeps"
ROOT_URI = f"s3://{BUCKET}/runs"


@pytest.fixture(scope="module")
def s3_ray(tmp_path_factory):
    """The S3 server, then a local Ray whose workers inherit its endpoint and credentials."""
    import ray

    cache = tmp_path_factory.mktemp("driver-cache")
    saved = os.environ.get("STARSWEEP_CACHE")
    os.environ["STARSWEEP_CACHE"] = str(cache)  # the driver's local MLflow store goes here
    with s3_server(BUCKET) as env:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield env, cache
        finally:
            ray.shutdown()
            if saved is None:
                os.environ.pop("STARSWEEP_CACHE", None)
            else:
                os.environ["STARSWEEP_CACHE"] = saved


def _table(location: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(storage.read_bytes(location)))


# The storage layer ------------------------------------------------------------------------
def test_locations_join_keep_the_query_and_local_paths_stay_paths(tmp_path):
    uri = "s3://b/runs?endpoint_override=127.0.0.1:9000&scheme=http"
    assert storage.join(uri, "x", "results.parquet") == \
        "s3://b/runs/x/results.parquet?endpoint_override=127.0.0.1:9000&scheme=http"
    assert storage.parent(storage.join(uri, "x")) == uri and storage.basename(storage.join(uri, "x")) == "x"
    assert storage.is_remote(uri) and not storage.is_remote(str(tmp_path))
    assert not storage.is_remote("file:///tmp/x") and storage.local_path("file:///tmp/x") == "/tmp/x"
    assert storage.normalize("s3://b/runs/") == "s3://b/runs"
    assert storage.join(str(tmp_path), "a") == os.path.join(str(tmp_path), "a")
    assert SweepLayout("s3://b/runs/q").pretrained == "s3://b/runs/pretrained"


def test_read_write_list_on_s3_and_clear_errors(s3_ray, tmp_path):
    where = f"{ROOT_URI}/unit/a/b.bin"
    storage.write_bytes(where, b"hello")
    assert storage.read_bytes(where) == b"hello" and storage.is_file(where)
    assert storage.is_dir(f"{ROOT_URI}/unit/a") and storage.list_dir(f"{ROOT_URI}/unit/a") == ["b.bin"]
    storage.move(where, f"{ROOT_URI}/unit/a/c.bin")
    assert storage.list_dir(f"{ROOT_URI}/unit/a") == ["c.bin"] and not storage.exists(where)
    # a pre-trained checkpoint given as a URI is read through the same layer
    from trainables.checkpoints import read_state_dict

    buf = io.BytesIO()
    torch.save({"state_dict": {"module.conv.weight": torch.ones(2)}}, buf)
    storage.write_bytes(f"{ROOT_URI}/unit/byol.pth", buf.getvalue())
    assert torch.equal(read_state_dict(f"{ROOT_URI}/unit/byol.pth")["conv.weight"], torch.ones(2))
    # a bucket that does not exist: the preflight names the field, the URI and the fix
    from trainables.preflight import check_writable

    with pytest.raises(StorageError) as info:
        check_writable("s3://no-such-bucket/runs", "storage")
    assert "storage: 's3://no-such-bucket/runs' cannot be written" in str(info.value)
    assert "bucket exists" in str(info.value) and "AWS_ENDPOINT_URL" in str(info.value)
    with pytest.raises(SpecError, match="storage.*unknown URI scheme 'ftp://'"):
        parse_spec({"name": "x", "storage": "ftp://h/x"})
    assert parse_spec({"name": "x", "storage": ROOT_URI}).sweep_dir == f"{ROOT_URI}/x"


# A sweep in the bucket ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_sweep(s3_ray, tmp_path_factory):
    spec_dir = tmp_path_factory.mktemp("spec")
    spec = parse_spec({
        "name": "objtiny", "storage": ROOT_URI, "trial": copy.deepcopy(tiny_trial(num_cycles=2)),
        "methods": ["star_sse", "local_de"],
        "search": {"kind": "paper_grid", "lr_max_ratios": [1, 2], "cycle_epochs_ratios": [0.5]},
        "baselines": {"num_members": 2}, "resources": {"cpu": 1},
    }, spec_dir=str(spec_dir))
    code = run_sweep(spec, spec_text="name: objtiny\n")
    return spec, code


def test_a_file_replaced_while_it_is_read_is_read_whole(s3_ray):
    """A reader of an object another process rewrites (a table `sweep export` writes again
    while `analysis report` reads it): each read returns one whole version, never a mix."""
    import threading

    where = f"{ROOT_URI}/unit/replaced.bin"
    versions = [b"a" * 300_000, b"b" * 700_000]
    storage.write_bytes(where, versions[0])
    stop = threading.Event()

    def rewrite():  # a new version every few tens of ms: often while a read is under way
        i = 0
        while not stop.wait(0.02):
            i += 1
            storage.write_bytes(where, versions[i % 2])

    writer = threading.Thread(target=rewrite, daemon=True)
    writer.start()
    try:
        reads = [storage.read_bytes(where) for _ in range(60)]
    finally:
        stop.set()
        writer.join()
    assert all(data in versions for data in reads), sorted({(len(d), d[:1]) for d in reads})


def test_optuna_journal_is_copied_to_the_bucket_and_back(s3_ray):
    """An optuna search in object storage keeps its journal on the driver's disk (file
    locks) and a copy in the sweep directory, brought back to a driver that has none."""
    from sweep import mlflow_mirror

    layout = SweepLayout(f"{ROOT_URI}/journaled")
    journal = layout.local_optuna_journal
    os.makedirs(os.path.dirname(journal), exist_ok=True)
    with open(journal, "w") as f:
        f.write('{"op_code": 0, "worker_id": "w", "study_name": "journaled-sse"}\n')
    assert mlflow_mirror.push_journal(layout, journal)
    assert storage.read_bytes(layout.optuna_journal) == open(journal, "rb").read()
    text = open(journal, "rb").read()
    os.remove(journal)  # the driver's machine is gone; a new driver resumes the sweep
    assert mlflow_mirror.pull_journal(layout, journal) and open(journal, "rb").read() == text
    assert not mlflow_mirror.pull_journal(layout, journal)  # it has one now: left alone
    assert not mlflow_mirror.push_journal(layout, "postgresql://db/optuna")  # a database: nothing to copy


def test_s3_sweep_writes_everything_to_the_bucket(s3_sweep, s3_ray):
    spec, code = s3_sweep
    assert code == 0
    layout = spec.layout
    assert layout.root == f"{ROOT_URI}/objtiny" and layout.is_remote
    df = _table(layout.results)
    assert len(df) == 2 * 3 + 2 and df.trial_id.nunique() == 3 and set(df.status) == {"TERMINATED"}
    assert not df.duplicated(["trial_id", "snapshot"]).any()
    last = df[df.snapshot == df.num_snapshots]
    for row in last.itertuples():  # each trial's ledger in the bucket: K snapshots, one state, the log
        ledger = storage.join(layout.ledger_dir(row.phase), row.trial_id)
        assert storage.list_dir(storage.join(ledger, "snapshots")) == sorted(
            f"{k:06d}.pt{s}" for k in range(1, row.snapshot + 1) for s in ("", ".sha256"))
        assert storage.list_dir(storage.join(ledger, "state")) == [f"{row.snapshot:06d}.pt",
                                                                   f"{row.snapshot:06d}.pt.sha256"]
        assert f"snapshot {row.snapshot}/{row.snapshot}" in storage.read_bytes(
            storage.join(ledger, "trial.log")).decode()
    names = set(storage.list_dir(layout.root))
    assert {"sweep.json", "spec.yaml", "results.parquet", "finetunes", "mlflow.db", "ledgers"} <= names
    assert storage.is_file(storage.join(layout.phase("grid"), SweepLayout.TUNER))
    assert len(storage.list_dir(layout.pretrained)) == 2  # checkpoint 0 (all trials use it) + its hash
    # fine-tunes (pretrained 0, seed 0) shared by the 3 trials, (0, 1) Local DE's second member
    finetunes = storage.list_dir(storage.join(layout.root, "finetunes"))
    assert len([n for n in finetunes if n.endswith(".pt")]) == 2
    assert len([n for n in finetunes if n.endswith(".pt.sha256")]) == 2
    # ... each computed exactly once: the records count the epochs a trial trained itself
    first = df[df.snapshot == 1]
    assert (first.epochs_trained > 0).sum() == 1  # one trial computed (0, 0), two loaded it
    assert (df[(df.method == "local_de") & (df.snapshot == 2)].epochs_trained
            - df[(df.method == "local_de") & (df.snapshot == 1)].epochs_trained.values == 1).all()
    # ... and the sweep's claims log says who computed each shared object, once
    events = [json.loads(line) for line in storage.read_bytes(layout.claims_log).decode().splitlines()]
    done = [e["key"] for e in events if e["event"] == "done"]
    assert len(done) == len(set(done))
    assert sorted(storage.basename(k) for k in done if "/finetunes/" in k) == \
        sorted(n for n in finetunes if n.endswith(".pt"))


def test_s3_sweep_mlflow_store_is_local_and_copied(s3_sweep, s3_ray, tmp_path):
    from mlflow.tracking import MlflowClient

    spec, _ = s3_sweep
    layout = spec.layout
    assert spec.tracking_uri == "sqlite:///" + layout.local_mlflow_db
    assert layout.local_mlflow_db.startswith(str(s3_ray[1]))  # on the driver's disk
    copy_path = tmp_path / "copy.db"
    storage.download(layout.mlflow_db, copy_path)
    df = _table(layout.results)
    for uri in (spec.tracking_uri, f"sqlite:///{copy_path}"):
        client = MlflowClient(tracking_uri=uri)
        runs = trial_runs(client.search_runs([client.get_experiment_by_name("objtiny").experiment_id]))
        assert sorted(r.data.tags["trial_id"] for r in runs) == sorted(df.trial_id.unique())
        assert all(r.info.status == "FINISHED" for r in runs)
        for run in runs:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "ens_test_acc")]
            assert sorted(steps) == sorted(df[df.trial_id == run.data.tags["trial_id"]].snapshot)


def test_s3_sweep_cli_status_export_report_and_resume(s3_sweep, s3_ray, tmp_path, capsys):
    spec, _ = s3_sweep
    layout = spec.layout
    before = _table(layout.results)
    capsys.readouterr()
    assert cli_main(["status", layout.root]) == 0
    out = capsys.readouterr().out
    assert "trials finished: 3/3" in out and "copied to s3://sweeps/runs/objtiny/mlflow.db" in out
    assert cli_main(["status", "objtiny", "--storage", ROOT_URI]) == 0
    exported = f"{ROOT_URI}/exports/objtiny.parquet"
    assert cli_main(["export", layout.root, "-o", exported]) == 0
    key = ["trial_id", "snapshot"]
    rebuilt = _table(exported).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(before.sort_values(key).reset_index(drop=True), rebuilt)
    assert storage.is_file(f"{ROOT_URI}/exports/objtiny.predictions.parquet")
    from analysis.__main__ import main as analysis_main

    assert analysis_main(["report", layout.root, "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "index.html").is_file()
    # resuming the finished sweep from its URI restores Tune from the bucket and re-runs nothing
    assert resume_sweep(layout.root) == 0
    after = _table(layout.results)
    assert (after.sort_values(key).timestamp.values == before.sort_values(key).timestamp.values).all()
