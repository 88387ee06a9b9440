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
    # The driver-local SQLite MLflow store and Optuna journal (STARSWEEP_CACHE, default the head
    # pod's own ~/.cache) must not be on the ReadWriteMany volume: SQLite needs file locks.
    env_vars = yaml.safe_load(job["spec"].get("runtimeEnvYAML") or "{}").get("env_vars", {})
    assert not _under(env_vars.get("STARSWEEP_CACHE", "/home/ray/.cache/starsweep"), mounts)


def test_rayjob_is_idempotent_and_retried_with_credentials_in_every_pod():
    """A retried or re-applied RayJob resumes its sweep; every Ray pod reaches the bucket."""
    job = _load("rayjob.yaml")
    entrypoint = shlex.split(job["spec"]["entrypoint"])
    assert entrypoint[entrypoint.index("--if-exists") + 1] == "resume", entrypoint
    assert job["spec"]["backoffLimit"] >= 1
    cluster = job["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    for template in templates:
        for container in _containers(template):
            secrets = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
            assert secrets or template["spec"].get("serviceAccountName"), container["name"]


CLUSTER_FILES = ["cluster.yaml", "cluster-nfs.yaml"]


def _ray_cluster_schema() -> dict:
    """The JSON schema of cluster-launcher configs that ships inside the ray package."""
    import json

    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def _submitted(text: str) -> list[tuple[str, str | None]]:
    """(spec, --storage or None) of each `python -m sweep run` a config's comments give."""
    return re.findall(r"python -m sweep run (specs/[\w.-]+\.ya?ml)(?: --storage (\S+))?", text)


def _container_mounts(docker: dict) -> dict[str, str]:
    """{container path: VM path} of the containers' -v options."""
    options = docker.get("run_options", []) + docker.get("worker_run_options", [])
    pairs = [opt.split()[-1].split(":")[:2] for opt in options if opt.startswith("-v ")]
    return {inside: outside for outside, inside in pairs}


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_cluster_launcher_config_is_valid_and_works_as_written(name):
    import jsonschema

    config = _load(name)
    jsonschema.validate(config, _ray_cluster_schema())
    assert config["head_node_type"] in config["available_node_types"]
    docker = config["docker"]
    # An image name with a registry host (a bare name would be pulled from Docker Hub),
    # the one the RayJob runs too.
    image = docker["image"]
    assert "." in image.split("/")[0] and "latest" not in image, image
    job = _load("rayjob.yaml")["spec"]["rayClusterSpec"]
    assert {c["image"] for c in _containers(job["headGroupSpec"]["template"])} == {image}
    # GPUs for the workers only: the head is a CPU VM.
    shared = docker.get("run_options", []) + docker.get("head_run_options", [])
    assert not [o for o in shared if "--gpus" in o], shared
    assert "--gpus all" in docker["worker_run_options"]
    # Nothing hidden (`|| true`), no variable defined nowhere; a filesystem is mounted on
    # the VM (initialization_commands), where the container's -v finds it.
    setup = config.get("setup_commands", []) + config.get("worker_setup_commands", [])
    init = config.get("initialization_commands", [])
    for command in setup + init:
        assert "|| true" not in command and not re.search(r"\$\{?[A-Za-z_]", command), command
    assert not [c for c in setup if re.search(r"\bmount\b", c)], "a mount inside the container"
    mounts = _container_mounts(docker)
    for outside in mounts.values():
        assert any(re.search(rf"\bmount\b.* {re.escape(outside)}$", c) for c in init), outside
    fetched = re.findall(r"copy_files\('[^']+', '([^']+)'\)", " ".join(setup))
    submitted = _submitted((DOCKER / name).read_text())
    assert submitted, f"docker/{name} names no spec to submit"
    for ref, override in submitted:
        spec = load_spec(str(ROOT / ref))
        where = override or spec.storage
        if storage.is_remote(where):  # object storage: the workers need credentials for it
            assert where.startswith("s3://"), where
            workers = [t for n, t in config["available_node_types"].items() if n != config["head_node_type"]]
            assert all("IamInstanceProfile" in t["node_config"] for t in workers)
        else:
            assert _under(where, list(mounts)), f"{ref}: storage {where} is not on {list(mounts)}"
        for path in spec.trial.pretrained.paths:  # on every node: shared, or fetched there
            assert storage.is_remote(path) or _under(path, list(mounts) + fetched), path
        data = spec.trial.data
        assert data.download or _under(data.data_dir, list(mounts) + fetched), data.data_dir


def _worker_shapes() -> list[tuple[str, float, float]]:
    """(where, CPUs, GPUs) of each GPU worker type of the RayJob and the launcher configs."""
    shapes = []
    job = _load("rayjob.yaml")["spec"]["rayClusterSpec"]
    for group in job["workerGroupSpecs"]:
        (container,) = _containers(group["template"])
        limits = container["resources"]["limits"]
        params = group.get("rayStartParams", {})
        shapes.append((f"rayjob.yaml {group['groupName']}", float(params.get("num-cpus", limits["cpu"])),
                       float(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))))
    for name in CLUSTER_FILES:
        config = _load(name)
        for type_name, node in config["available_node_types"].items():
            if node["resources"].get("GPU"):
                shapes.append((f"{name} {type_name}", float(node["resources"]["CPU"]),
                               float(node["resources"]["GPU"])))
    return shapes


def test_trials_use_every_gpu_of_a_worker():
    job = _load("rayjob.yaml")
    spec = load_spec(str(ROOT / shlex.split(job["spec"]["entrypoint"])[4]))
    cpu, gpu = spec.resources.cpu, spec.resources.gpu
    shapes = _worker_shapes()
    assert len(shapes) == 3, shapes
    for where, cpus, gpus in shapes:
        at_once = min(cpus // cpu, gpus // gpu)  # trials Ray places on one worker
        assert at_once * gpu == gpus, f"{where}: {at_once:g} trials of {cpu:g} CPU / {gpu:g} GPU " \
            f"leave {gpus - at_once * gpu:g} of {gpus:g} GPUs idle ({cpus:g} CPUs)"
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]
    assert head["num-gpus"] == "0"  # no trial lands on the head
    # A job that starts before its GPU workers is not refused: the autoscaler adds them.
    assert job["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"] is True
    assert spec.max_concurrent_trials is None  # nothing caps the trials below the GPUs


def test_results_pod_reads_the_sweep_in_the_bucket_as_the_rayjob_does():
    """docker/results-pod.yaml reads what a torn-down RayJob left in the spec's storage: the
    same image and credentials as the RayJob's head, and commands on the spec's bucket."""
    pod = _load("results-pod.yaml")
    job = _load("rayjob.yaml")
    head_template = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    (container,) = _containers(pod)
    (head,) = _containers(head_template)
    assert container["image"] == head["image"]
    assert container.get("envFrom") == head.get("envFrom")
    spec = load_spec(str(ROOT / shlex.split(job["spec"]["entrypoint"])[4]))
    assert storage.is_remote(spec.sweep_dir)
    assert spec.sweep_dir in (DOCKER / "results-pod.yaml").read_text()


def _rayjob_schema() -> dict:
    """KubeRay's RayJob v1 schema (tests/kuberay/README.md names its source)."""
    import gzip
    import json

    return json.loads(gzip.decompress((ROOT / "tests" / "kuberay" / "rayjob-v1-schema.json.gz").read_bytes()))


def schema_problems(doc, schema: dict, path: str = "") -> list[str]:
    """What Kubernetes would reject or silently drop: JSON-schema errors, and keys the schema
    does not know (a CRD prunes them; `kubectl apply` only warns)."""
    import jsonschema

    found = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
             for e in jsonschema.Draft7Validator(schema).iter_errors(doc)] if not path else []
    strict = "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields")
    if isinstance(doc, dict) and strict:
        for key, value in doc.items():
            if key not in schema["properties"]:
                known = ", ".join(sorted(schema["properties"]))[:200]
                found.append(f"{path}{key}: not a field here (known: {known})")
            else:
                found += schema_problems(value, schema["properties"][key], f"{path}{key}.")
    elif isinstance(doc, list) and "items" in schema:
        for i, item in enumerate(doc):
            found += schema_problems(item, schema["items"], f"{path}{i}.")
    return found


def test_rayjob_validates_against_kuberays_crd():
    schema = _rayjob_schema()
    assert schema_problems(_load("rayjob.yaml"), schema) == []
    typo = _load("rayjob.yaml")
    typo["spec"]["backofLimit"] = typo["spec"].pop("backoffLimit")
    assert any("backofLimit: not a field here" in p for p in schema_problems(typo, schema))


def test_results_pod_validates_against_the_pod_schema():
    """The Pod's spec against Kubernetes' PodSpec (the one KubeRay's CRD holds for its pods)."""
    pod = _load("results-pod.yaml")
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod") and pod["metadata"]["name"]
    job_spec = _rayjob_schema()["properties"]["spec"]["properties"]
    pod_spec = job_spec["submitterPodTemplate"]["properties"]["spec"]
    assert schema_problems(pod["spec"], pod_spec) == []
    assert schema_problems({**pod["spec"], "restartPolicy": 3}, pod_spec)  # the check bites


@pytest.mark.parametrize("name", ["Dockerfile", "rayjob.yaml", "results-pod.yaml", *CLUSTER_FILES])
def test_spec_references_exist(name):
    for ref in _spec_refs((DOCKER / name).read_text()):
        assert (ROOT / ref).is_file(), f"docker/{name} names {ref}, which does not exist"
