"""docker/: the cluster image, the KubeRay RayJob and the cluster-launcher config
agree with each other, with requirements.txt and with the specs they run.
(Static checks: no docker engine or Kubernetes is needed.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from sweep.spec import load_spec
from trainables import storage

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
BASE_IMAGE = "rayproject/ray:2.60.0-py311-gpu"


def _ray_pin() -> str:
    pins = re.findall(r"^ray\[[^\]]*\]==(\S+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert len(pins) == 1, "requirements.txt must pin ray exactly once"
    return pins[0]


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            out.append((instruction.upper(), args.strip()))
    return out


def _load(name: str) -> dict:
    data = yaml.safe_load((DOCKER / name).read_text())
    assert isinstance(data, dict), f"docker/{name} is not a YAML mapping"
    return data


def _spec_refs(text: str) -> list[str]:
    return re.findall(r"\bspecs/[\w.-]+\.ya?ml\b", text)


def _under(path: str, mounts: list[str]) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


def test_dockerfile_pins_the_ray_gpu_image_and_installs_requirements():
    instructions = _dockerfile()
    froms = [args for ins, args in instructions if ins == "FROM"]
    assert froms == [BASE_IMAGE], froms
    # The image's Ray is the one the project pins (head, workers and clients must match).
    assert BASE_IMAGE.split(":")[1].startswith(_ray_pin() + "-"), (BASE_IMAGE, _ray_pin())
    copies = [args for ins, args in instructions if ins == "COPY"]
    assert any("requirements.txt" in shlex.split(c) for c in copies), copies
    runs = [args for ins, args in instructions if ins == "RUN"]
    assert any(re.search(r"\bpip install\b.*-r requirements\.txt", r) for r in runs), runs
    # The code and the specs are in the image (a RayJob runs its entrypoint there, no upload).
    copied = {Path(shlex.split(c)[-2]).name for c in copies}
    assert {"trainables", "search_spaces", "sweep", "specs"} <= copied, copied
    env = " ".join(args for ins, args in instructions if ins == "ENV")
    assert "RAY_AUTH_MODE=token" in env


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def test_rayjob_runs_an_existing_spec_on_shared_storage():
    job = _load("rayjob.yaml")
    assert job["apiVersion"].startswith("ray.io/") and job["kind"] == "RayJob"
    entrypoint = shlex.split(job["spec"]["entrypoint"])
    assert entrypoint[:4] == ["python", "-m", "sweep", "run"], entrypoint
    spec_file = entrypoint[4]
    assert spec_file.startswith("specs/") and (ROOT / spec_file).is_file(), spec_file
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == _ray_pin()
    # The image sets RAY_AUTH_MODE=token: the pods need a token, which KubeRay provides.
    assert cluster.get("authOptions", {}).get("mode") == "token"
    head = cluster["headGroupSpec"]["template"]
    workers = [g["template"] for g in cluster["workerGroupSpecs"]]
    cluster_image = _load("cluster.yaml")["docker"]["image"]
    for template in [head, *workers]:
        for container in _containers(template):
            assert container["image"] == cluster_image  # the image docker/Dockerfile builds

    # Every pod mounts the same shared volume; the sweep's storage, data and
    # checkpoints (and the pre-trained cache) must live on it.
    def shared_mounts(template: dict) -> list[str]:
        claims = {v["name"] for v in template["spec"].get("volumes", []) if "persistentVolumeClaim" in v}
        return [m["mountPath"] for c in _containers(template) for m in c.get("volumeMounts", [])
                if m["name"] in claims]

    mounts = shared_mounts(head)
    assert mounts, "the head pod mounts no shared volume"
    for template in workers:
        assert set(shared_mounts(template)) >= set(mounts), "a worker group lacks the head's shared mount"
    spec = load_spec(str(ROOT / spec_file))
    paths = [spec.sweep_dir, spec.trial.data.data_dir, *spec.trial.pretrained.paths]
    for path in filter(None, paths):  # an object-store URI is reached from every node
        assert storage.is_remote(path) or _under(path, mounts), \
            f"{spec_file}: {path} is neither on the shared mount {mounts} nor in object storage"
    env_vars = yaml.safe_load(job["spec"].get("runtimeEnvYAML") or "{}").get("env_vars", {})
    if "STARSWEEP_CACHE" in env_vars:
        assert _under(env_vars["STARSWEEP_CACHE"], mounts)


def test_cluster_launcher_config_references_existing_specs():
    config = _load("cluster.yaml")
    assert config["docker"]["image"] and "latest" not in config["docker"]["image"]
    assert config["head_node_type"] in config["available_node_types"]
    refs = _spec_refs((DOCKER / "cluster.yaml").read_text())
    assert refs, "docker/cluster.yaml names no spec to submit"
    mounts = [opt.split()[-1].split(":")[1] for opt in config["docker"].get("run_options", [])
              if opt.startswith("-v ")]
    for ref in refs:
        assert (ROOT / ref).is_file(), ref
        spec = load_spec(str(ROOT / ref))
        assert storage.is_remote(spec.sweep_dir) or _under(spec.sweep_dir, mounts), \
            f"{ref}: storage {spec.storage} is neither on {mounts} nor in object storage"


@pytest.mark.parametrize("name", ["Dockerfile", "rayjob.yaml", "cluster.yaml"])
def test_spec_references_exist(name):
    for ref in _spec_refs((DOCKER / name).read_text()):
        assert (ROOT / ref).is_file(), f"docker/{name} names {ref}, which does not exist"
