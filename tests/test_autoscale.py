"""Before the trials start, on a cluster that can autoscale: a real Ray head on loopback
whose autoscaler manages a GPU worker type with zero workers (Ray's fake multi-node
provider: it starts real worker raylets on this machine when asked). A sweep that asks
for a GPU is not refused: `check_resources` warns and requests the trials' resources,
and the autoscaler starts a GPU node. A local Ray (read-only autoscaler) still refuses.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID
from test_cluster_submit import RAY, ROOT, _free_port, _stop_head

from sweep.autoscale import configured, node_types

DRIVER = textwrap.dedent("""
    import logging, sys, time
    import ray
    from sweep.autoscale import cluster_can_autoscale, release_requested_resources
    from sweep.resources import check_resources
    from sweep.spec import parse_spec

    logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
    ray.init()
    deadline = time.monotonic() + 120
    while not cluster_can_autoscale():  # the autoscaler's first status report
        assert time.monotonic() < deadline, "no autoscaler status"
        time.sleep(0.5)
    assert ray.cluster_resources().get("GPU", 0) == 0
    spec = parse_spec({"name": "auto", "storage": sys.argv[1], "resources": {"cpu": 1, "gpu": 1}})
    assert check_resources(spec, n_trials=3, request=False) is True  # dry-run: asks nothing
    assert check_resources(spec, n_trials=3) is True
    while ray.cluster_resources().get("GPU", 0) < 1:
        assert time.monotonic() < deadline + 180, f"no GPU node joined: {ray.cluster_resources()}"
        time.sleep(1)
    print("GPU node joined:", ray.cluster_resources().get("GPU"))
    release_requested_resources()
""")


@pytest.fixture(scope="module")
def autoscaling_head(tmp_path_factory):
    """`ray start --head` with an autoscaling config: a CPU head and up to one fake GPU worker."""
    tmp = tmp_path_factory.mktemp("autoscale")
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    port = _free_port()
    config = {
        "cluster_name": "fake", "max_workers": 1, "upscaling_speed": 1.0, "idle_timeout_minutes": 1,
        # as Ray's own fake multi-node example: nodes known by their node ids
        "provider": {"type": "fake_multinode", "gcs_address": f"127.0.0.1:{port}", "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "gpu_worker": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {},
                           "min_workers": 0, "max_workers": 1},
        },
        "head_node_type": "ray.head.default",
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }
    (tmp / "autoscaler.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "PYTHONPATH")}
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_FAKE_CLUSTER": "1",
                "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "RAY_USAGE_STATS_ENABLED": "0", "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"})
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    cmd = [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
           "--num-cpus", "1", "--num-gpus", "0", "--temp-dir", temp_dir, "--disable-usage-stats",
           "--include-dashboard", "false", "--autoscaling-config", str(tmp / "autoscaler.json"),
           "--ray-client-server-port", str(_free_port()), "--dashboard-agent-listen-port", str(_free_port())]
    with open(tmp / "head.log", "w") as log:
        head = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield {"address": f"127.0.0.1:{port}", "env": env, "tmp": tmp, "head": head, "temp_dir": temp_dir}
    finally:
        _stop_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.cluster
def test_sweep_requests_gpus_from_an_autoscaling_cluster(autoscaling_head):
    head = autoscaling_head
    driver = subprocess.run(
        [sys.executable, "-c", DRIVER, str(head["tmp"] / "runs")], cwd=ROOT, timeout=600,
        env={**head["env"], "RAY_ADDRESS": head["address"]}, capture_output=True, text=True,
    )
    monitor = sorted(Path(head["temp_dir"]).glob("session_*/logs/monitor.*"))
    log = "".join(p.read_text()[-3000:] for p in monitor)
    assert driver.returncode == 0, driver.stdout[-3000:] + driver.stderr[-3000:] + log
    assert "The cluster can autoscale: requesting 3 trial(s) of 1 CPU / 1 GPU" in driver.stdout
    assert "resources.gpu: each trial asks for 1 GPU(s)" in driver.stdout
    assert "GPU node joined: 1.0" in driver.stdout


def test_local_ray_is_not_autoscaling(ray_session, tmp_path, capsys):
    """A local Ray's autoscaler is read-only (anonymous node types): no request, exit 2."""
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    from sweep.autoscale import cluster_can_autoscale
    from sweep.cli import main as cli_main

    def status() -> dict:
        raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        return json.loads(raw) if raw else {}

    # The monitor's first reports may hold only load metrics (no `autoscaler_report` yet):
    # cluster_can_autoscale waits for one that names the node types (it failed 1/1 without).
    assert not cluster_can_autoscale()
    assert node_types(status()) and all(t.startswith("node_") for t in node_types(status()))
    spec_file = tmp_path / "gpu.yaml"
    spec_file.write_text(f"name: gpu\nstorage: {tmp_path}\nresources: {{cpu: 1, gpu: 1}}\n")
    assert cli_main(["run", str(spec_file), "--no-preflight"]) == 2  # checked against this Ray
    assert "resources.gpu: each trial asks for 1 GPU(s)" in capsys.readouterr().err
    assert configured({"gpu_worker", "node_ab12"}) and not configured({"node_ab12"})
