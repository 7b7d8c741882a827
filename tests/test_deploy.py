"""The KubeRay deployment under deploy/kuberay: its documents parse and agree with the service's config.

No Kubernetes cluster is reachable where the tests run, so this checks what can go wrong on paper: the
service config loads, its job folders are on the volume every Ray node and the service mount, that volume
can be mounted by many nodes at once, and the service points at KubeRay's Service for the head.
"""

import re
import tomllib
from pathlib import Path

import yaml

from vlmtune.cli import main
from vlmtune.config import load_config
from vlmtune.service.config import ServiceConfig

KUBERAY = Path(__file__).parent.parent / "deploy" / "kuberay"


def _documents() -> dict[str, dict]:
    return {doc["kind"] + "/" + doc["metadata"]["name"]: doc for doc in yaml.safe_load_all((KUBERAY / "raycluster.yaml").read_text())}


def _mounts(pod: dict, claim: str) -> set[str]:
    """Where the containers of a pod template mount the volume of a claim."""
    volumes = {v["name"] for v in pod["spec"]["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim}
    return {m["mountPath"] for c in pod["spec"]["containers"] for m in c.get("volumeMounts", []) if m["name"] in volumes}


def test_the_kuberay_service_config_loads_and_its_job_folders_are_on_the_shared_volume():
    cfg = load_config(ServiceConfig, KUBERAY / "service.yaml", {})
    docs = _documents()
    cluster = docs["RayCluster/vlmtune"]["spec"]
    assert cfg.executor == "ray" and cfg.ray_address == f"http://{docs['RayCluster/vlmtune']['metadata']['name']}-head-svc:8265"
    assert docs["PersistentVolumeClaim/vlmtune-shared"]["spec"]["accessModes"] == ["ReadWriteMany"]
    pods = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"]),
            docs["Deployment/vlmtune-service"]["spec"]["template"]]
    for pod in pods:
        assert any(cfg.storage.is_relative_to(mount) for mount in _mounts(pod, "vlmtune-shared")), pod["spec"]["containers"][0]["name"]
    service_pod = docs["Deployment/vlmtune-service"]["spec"]["template"]
    assert not any(cfg.home.is_relative_to(mount) for mount in _mounts(service_pod, "vlmtune-shared"))  # SQLite stays off NFS
    assert any(cfg.home.is_relative_to(mount) for mount in _mounts(service_pod, "vlmtune-home"))
    assert cluster["rayVersion"] in (KUBERAY / "Dockerfile").read_text()


def test_the_commands_the_kuberay_documents_run_are_vlmtunes_own():
    """The service pod's command parses as the CLI's, reading the config where the ConfigMap is mounted; the Ray
    jobs' entrypoint is the CLI's worker command; the image installs an extra pyproject.toml declares."""
    cfg = load_config(ServiceConfig, KUBERAY / "service.yaml", {})
    pod = _documents()["Deployment/vlmtune-service"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    program, name, *args = container["command"]
    assert program == "vlmtune" and name in main.commands
    config = Path(args[args.index("--config") + 1])
    maps = {v["name"]: v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    mounted = {Path(m["mountPath"]) for m in container["volumeMounts"] if m["name"] in maps}
    assert config.parent in mounted and config.name == "service.yaml" and "vlmtune-service" in maps.values()
    args[args.index("--config") + 1] = str(KUBERAY / "service.yaml")
    main.commands[name].make_context(name, args)  # raises on an option the command lacks
    assert {p["containerPort"] for p in container["ports"] if p["name"] == "http"} == {cfg.port}
    program, worker = cfg.ray_worker_command.split()
    assert program == "vlmtune" and worker in main.commands
    extras = tomllib.loads((KUBERAY.parent.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed = re.search(r'pip install .*"/home/ray/vlmtune\[(\w+)\]"', (KUBERAY / "Dockerfile").read_text())
    assert installed and installed[1] in extras and any(dep.startswith("ray[default]") for dep in extras[installed[1]])


def test_every_pod_can_write_its_volumes_as_the_images_user():
    group = re.search(r"--chown=\w+:(\w+)", (KUBERAY / "Dockerfile").read_text())[1]
    assert group == "users"  # gid 100 in Ray's images
    docs = _documents()
    cluster = docs["RayCluster/vlmtune"]["spec"]
    for pod in (cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"]),
                docs["Deployment/vlmtune-service"]["spec"]["template"]):
        assert pod["spec"]["securityContext"]["fsGroup"] == 100, pod["spec"]["containers"][0]["name"]
