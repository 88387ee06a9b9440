"""The cluster path end to end: `ray start --head` on loopback with token auth,
`ray job submit --working-dir <repo> -- python -m sweep run SPEC`, then the
Parquet table and the MLflow runs the job wrote to the sweep's storage.

Everything runs through the `ray` CLI next to this interpreter (as a user
would), in subprocesses whose environment carries the auth settings:

    RAY_AUTH_MODE=token          on the head and on every client (`ray job ...`)
    RAY_AUTH_TOKEN_PATH=<file>   a fresh token for this test (not ~/.ray/auth_token)

The head runs with `--block` in its own session and is stopped by signalling the
processes it started (by pid), never with `ray stop`, which kills every Ray
process on the machine by name, including other Ray instances (other tests, other
users). Its temp dir is private, so no `ray.init()` elsewhere finds this head.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.cluster  # a `ray start` head and `ray job submit`: `make test-cluster`

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: `ray` and the `python` the job runs
RAY = str(BIN / "ray")
NAME = "cluster_tiny"

# A minimal specs/quickstart.yaml: StarSSE at one grid cell plus Local DE, tiny sizes.
TINY_SPEC = {
    "name": NAME,
    "trial": {
        "device": "cpu",
        "num_cycles": 2,
        "model": {"arch": "small_cnn", "width": 8},
        "data": {"dataset": "fashion_mnist_transfer", "train_size": 200, "val_size": 50, "test_size": 200,
                 "ood": {"corruptions": ["gaussian_noise", "contrast"], "severities": [3], "max_images": 20}},
        "pretrained": {"source": "embedded", "num_checkpoints": 1, "epochs": 0.5, "train_size": 1000},
        "finetune": {"lr": 0.02, "epochs": 1, "batch_size": 50},
        "eval": {"batch_size": 256, "bn_update_images": 100},
    },
    "methods": ["star_sse", "local_de"],
    "search": {"kind": "paper_grid", "lr_max_ratios": [2], "cycle_epochs_ratios": [0.5]},
    "seeds": [0],
    "pretrained_indices": [0],
    "baselines": {"num_members": 2, "local_de": {"seeds": [0], "pretrained_indices": [0]}},
    "resources": {"cpu": 1, "gpu": 0},
    "max_failures": 0,
    "mlflow": {"enabled": True},
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(head: dict, path: str) -> dict:
    """GET a job API endpoint with the head's token."""
    request = urllib.request.Request(head["address"] + path,
                                     headers={"Authorization": "Bearer " + head["token"].read_text()})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _ray(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _proc_stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of a live process, from /proc; None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[1]), fields[0], fields[19]) if fields[0] not in ("Z", "X") else None


def _process_tree(pid: int) -> dict[int, str]:
    """pid -> start time of `pid` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))):
            children.setdefault(stat[0], []).append(int(entry.name))
            starts[int(entry.name)] = stat[2]
    tree, todo = {}, [pid]
    while todo:
        p = todo.pop()
        if p in starts:
            tree[p] = starts[p]
        todo.extend(children.get(p, []))
    return tree


def _stop_head(head: subprocess.Popen) -> None:
    """SIGTERM the blocking `ray start` (it drains, then stops its GCS, raylet,
    dashboard and workers); then SIGKILL, by pid, whatever it started that is still
    alive. The job driver runs in a session of its own, so the process tree is
    collected before anything dies and orphans are re-parented."""
    tree = _process_tree(head.pid)
    head.terminate()
    try:
        head.wait(timeout=45)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait(timeout=10)

    def alive() -> list[int]:
        return [p for p, start in tree.items() if (s := _proc_stat(p)) and s[2] == start]

    deadline = time.monotonic() + 5
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in alive():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head on 127.0.0.1 with 2 CPUs and token authentication."""
    tmp = tmp_path_factory.mktemp("cluster")
    token_file = tmp / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "PYTHONPATH")}
    env.update({
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # the job's `python` is the venv's
        # Single-node mode: Ray keeps 127.0.0.1 as the node address (it otherwise
        # replaces a loopback --node-ip-address by the machine's interface address).
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    })
    # Short private temp dir: Unix socket paths under it must stay < 108 bytes.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    port, dash_port = _free_port(), _free_port()
    cmd = [
        RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash_port), "--num-cpus", "2",
        "--num-gpus", "0", "--temp-dir", temp_dir, "--disable-usage-stats",
        "--ray-client-server-port", str(_free_port()),
        "--dashboard-agent-listen-port", str(_free_port()),
    ]
    with open(tmp / "head.log", "w") as log:
        head = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    address = f"http://127.0.0.1:{dash_port}"
    try:
        deadline = time.monotonic() + 90
        while True:  # up when the job API answers an authenticated request
            assert head.poll() is None, f"ray start exited:\n{(tmp / 'head.log').read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no job API:\n{(tmp / 'head.log').read_text()[-4000:]}"
            probe = _ray(["job", "list", "--address", address], env, timeout=60)
            if probe.returncode == 0:
                break
            time.sleep(1)
        yield {"address": address, "env": env, "temp_dir": temp_dir, "tmp": tmp, "token": token_file}
    finally:
        _stop_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster_job(ray_head):
    """Submits the tiny sweep as a Ray job with the repo as working dir, waits for it."""
    tmp = ray_head["tmp"]
    storage = tmp / "storage"
    spec_path = tmp / "tiny_cluster.yaml"
    spec_path.write_text(yaml.safe_dump({**TINY_SPEC, "storage": str(storage)}, sort_keys=False))
    job_id = f"starsweep-test-{uuid.uuid4().hex[:8]}"
    runtime_env = {"env_vars": {"STARSWEEP_CACHE": str(tmp / "default_cache"),
                                "STARSWEEP_REPORT_EVERY_S": "5"}}
    t0 = time.monotonic()
    submit = _ray(["job", "submit", "--address", ray_head["address"], "--submission-id", job_id,
                   "--working-dir", str(ROOT), "--runtime-env-json", json.dumps(runtime_env),
                   "--", *_rayjob_entrypoint(spec_path)],  # docker/rayjob.yaml's, with this spec
                  ray_head["env"], timeout=300)
    elapsed = time.monotonic() - t0
    info = _get(ray_head, f"/api/jobs/{job_id}")  # the job API's view: status, entrypoint, runtime_env
    logs = _ray(["job", "logs", "--address", ray_head["address"], job_id], ray_head["env"], timeout=60)
    return {"job_id": job_id, "submit": submit, "info": info, "logs": logs.stdout,
            "sweep_dir": storage / NAME, "elapsed": elapsed, **ray_head}


def test_job_api_requires_the_token(ray_head):
    url = ray_head["address"] + "/api/jobs/"
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(url, timeout=10)
    assert exc.value.code == 401  # no token
    bad = urllib.request.Request(url, headers={"Authorization": "Bearer " + "0" * 64})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(bad, timeout=10)
    assert exc.value.code == 403  # wrong token
    assert isinstance(_get(ray_head, "/api/jobs/"), list)  # the right token


def test_job_succeeds(cluster_job):
    job = cluster_job
    detail = f"job info: {job['info']}\njob logs:\n{job['logs'][-4000:]}\n{job['submit'].stderr[-2000:]}"
    assert job["info"]["status"] == "SUCCEEDED", detail
    assert job["submit"].returncode == 0, detail
    assert job["info"]["runtime_env"]["working_dir"].startswith("gcs://_ray_pkg_")
    logs = job["logs"]
    assert "Connecting to existing Ray cluster at address: 127.0.0.1:" in logs  # RAY_ADDRESS, not a local Ray
    assert f"sweep '{NAME}' done: 2 TERMINATED" in logs, logs[-3000:]
    print(f"job {job['job_id']}: submit to finish {job['elapsed']:.1f} s")


def test_working_dir_upload_leaves_out_venv_git_and_runs(cluster_job):
    packages = list(Path(cluster_job["temp_dir"]).glob(
        "session_latest/runtime_resources/working_dir_files/_ray_pkg_*"))
    packages = [p for p in packages if p.is_dir()]
    assert len(packages) == 1, packages
    pkg = packages[0]
    for needed in ("sweep", "trainables", "search_spaces", "specs"):
        assert (pkg / needed).is_dir(), needed
    for excluded in (".venv", ".git", "runs", ".pytest_cache"):
        assert not (pkg / excluded).exists(), f"{excluded} was uploaded"
    size = sum(f.stat().st_size for f in pkg.rglob("*") if f.is_file())
    assert size < 20 * 2**20, f"working dir package is {size / 2**20:.1f} MiB"


def test_results_table_from_the_job(cluster_job):
    sweep_dir = cluster_job["sweep_dir"]
    df = pd.read_parquet(sweep_dir / "results.parquet")
    # StarSSE: fine-tune + 2 cycles = 3 snapshots; Local DE: 2 members = 2 snapshots.
    assert len(df) == 3 + 2
    assert df.trial_id.nunique() == 2
    assert not df.duplicated(["trial_id", "snapshot"]).any()
    assert set(df.status) == {"TERMINATED"} and set(df.sweep) == {NAME}
    assert sorted(df.groupby("method").snapshot.max().items()) == [("local_de", 2), ("star_sse", 3)]
    star = df[df.method == "star_sse"]
    assert (star.lr_max_ratio == 2).all() and (star.lr_max == 0.04).all() and (star.cycle_epochs == 0.5).all()
    assert df.ens_test_acc.between(0, 1).all() and (df.wall_time_s > 0).all()
    # Everything the trials wrote is under the sweep's storage (a shared mount on a cluster):
    # pre-trained checkpoints and fine-tunes there, nothing in the default cache.
    assert list(sweep_dir.parent.rglob("pretrained/*.pt")), "no pre-trained checkpoint in the storage"
    assert len(list((sweep_dir / "finetunes").glob("*.pt"))) == 2  # (ckpt 0, seeds 0 and 1)
    assert not (cluster_job["tmp"] / "default_cache").exists()


def test_mlflow_runs_from_the_job(cluster_job):
    from mlflow.tracking import MlflowClient

    sweep_dir = cluster_job["sweep_dir"]
    client = MlflowClient(tracking_uri=f"sqlite:///{sweep_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(NAME)
    assert exp is not None
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=100) if "trial_id" in r.data.tags]
    df = pd.read_parquet(sweep_dir / "results.parquet")
    assert len(runs) == 2
    assert {r.data.tags["trial_id"] for r in runs} == set(df.trial_id)
    for run in runs:
        tags = run.data.tags
        assert run.info.status == "FINISHED" and tags["sweep"] == NAME
        assert run.data.params["method"] == tags["method"]
        history = client.get_metric_history(run.info.run_id, "ens_test_acc")
        k = 3 if tags["method"] == "star_sse" else 2
        assert sorted(m.step for m in history) == list(range(1, k + 1))
        rows = df[df.trial_id == tags["trial_id"]].set_index("snapshot")
        for m in history:
            assert math.isclose(m.value, rows.loc[m.step, "ens_test_acc"], rel_tol=1e-6)


#: STARSWEEP_REPEAT=10 runs the RayJob entrypoint test 10 times in a row.
REPEAT = int(os.environ.get("STARSWEEP_REPEAT", "1"))
#: Columns that name the sweep or its storage, measure time, or say which trial computed a shared
#: fine-tune (`epochs_trained`: whichever got there first): the rest must be equal.
RUN_COLUMNS = ["sweep", "trial_id", "config_json", "timestamp", "wall_time_s", "train_images_per_s",
               "peak_memory_mb", "epochs_trained"]


def _rayjob_entrypoint(spec_path: Path) -> list[str]:
    """docker/rayjob.yaml's entrypoint with its spec replaced by `spec_path` (every option kept)."""
    import shlex

    entry = yaml.safe_load((ROOT / "docker/rayjob.yaml").read_text())["spec"]["entrypoint"]
    words = shlex.split(entry)
    assert words[:4] == ["python", "-m", "sweep", "run"] and "--if-exists" in words
    assert words[words.index("--if-exists") + 1] == "resume"  # a retried RayJob continues the sweep
    return [str(spec_path) if w.endswith(".yaml") else w for w in words]


def _submit(head: dict, words: list[str], wait: bool = True) -> tuple[str, subprocess.CompletedProcess]:
    job_id = f"starsweep-rayjob-{uuid.uuid4().hex[:8]}"
    runtime_env = {"env_vars": {"STARSWEEP_REPORT_EVERY_S": "60"}}
    cmd = ["job", "submit", "--address", head["address"], "--submission-id", job_id,
           "--working-dir", str(ROOT), "--runtime-env-json", json.dumps(runtime_env)]
    proc = _ray([*cmd, *([] if wait else ["--no-wait"]), "--", *words], head["env"], timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return job_id, proc


def _job_logs(head: dict, job_id: str) -> str:
    return _ray(["job", "logs", "--address", head["address"], job_id], head["env"], timeout=60).stdout


def _wait_for_records(sweep_dir: Path, job_id: str, head: dict, timeout: float = 240) -> None:
    from sweep.layout import SweepLayout
    from sweep.results import ledger_tables

    deadline = time.monotonic() + timeout
    while not (sweep_dir / "sweep.json").is_file() or not ledger_tables(
            SweepLayout(str(sweep_dir)), sweep_dir.name, ["grid"]).rows:
        assert time.monotonic() < deadline, _job_logs(head, job_id)[-3000:]
        time.sleep(0.5)


@pytest.mark.parametrize("attempt", range(REPEAT))
def test_rayjob_entrypoint_after_a_driver_kill(cluster_job, tmp_path, attempt):
    """The RayJob's entrypoint after its driver was killed with SIGKILL mid-sweep (a KubeRay
    retry on a new cluster): it resumes, finishes the sweep, and its records equal those of
    the sweep that was never interrupted (cluster_job, itself submitted with the RayJob's
    entrypoint). (A second run of a finished sweep resumes it to the same table:
    tests/test_sweep_run.py::test_export_status_and_resume_of_a_finished_sweep, through the
    same `--if-exists resume`, without a cluster.)"""
    name = "rayjob_killed"
    spec_path = tmp_path / f"{name}.yaml"
    spec_path.write_text(yaml.safe_dump({**TINY_SPEC, "name": name, "storage": str(tmp_path / "s"),
                                         "mlflow": {"enabled": False}}, sort_keys=False))
    words, sweep_dir = _rayjob_entrypoint(spec_path), tmp_path / "s" / name
    job_id, _ = _submit(cluster_job, words, wait=False)
    _wait_for_records(sweep_dir, job_id, cluster_job)
    os.kill(int(_get(cluster_job, f"/api/jobs/{job_id}")["driver_info"]["pid"]), signal.SIGKILL)
    job_id, _ = _submit(cluster_job, words)
    logs = _job_logs(cluster_job, job_id)
    assert f"sweep '{name}' exists: resuming it" in logs and "done: 2 TERMINATED" in logs, logs[-3000:]
    tables = [pd.read_parquet(d / "results.parquet") for d in (sweep_dir, cluster_job["sweep_dir"])]
    same = [t.drop(columns=RUN_COLUMNS).sort_values(["method", "snapshot"]).reset_index(drop=True)
            for t in tables]
    pd.testing.assert_frame_equal(*same)  # the killed-and-retried sweep computed the same records
