"""The deployments under deploy/: KubeRay's documents parse and agree with the service's config; SLURM's script parses.

No Kubernetes cluster is reachable where the tests run, so this checks what can go wrong on paper: the
service config loads, its job folders are on the volume every Ray node and the service mount, that volume
can be mounted by many nodes at once, and the service points at KubeRay's Service for the head.
"""

import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import click
import pytest
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


# ---------------------------------------------------------------------------------------- SLURM
SBATCH = KUBERAY.parent / "slurm" / "vlmtune-ray.sbatch"


def _sbatch_commands(program: str) -> list[list[str]]:
    """The script's command lines that run `program`, continuation lines joined, its variables given sample values."""
    text = re.sub(r"\\\n\s*", " ", SBATCH.read_text())
    found = []
    for line in text.splitlines():
        # A command starts a line (after `srun ... -w NODE`, `until` or `exec`); a later `ray` is an option's value.
        start = re.match(rf"\s*(?:srun .*?-w \S+\s+|until |exec )?({program} .*)", line)
        if start:
            command = start[1].split(";")[0].removesuffix("&")
            words = shlex.split(re.sub(r"\$\{[^}]*\}|\$\w+", "1", command))[1:]
            found.append([w for w in words if not re.match(r"\d*>", w)])  # redirections are the shell's
    return found


def _parse(group: click.Group, args: list[str]) -> None:
    """Parse a command line down the group's subcommands as click would run it; raises on what they lack."""
    ctx = group.make_context(group.name, list(args))
    command, rest = group, ctx.protected_args + ctx.args
    while isinstance(command, click.Group) and rest:
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
        rest = ctx.protected_args + ctx.args if isinstance(command, click.Group) else []


def test_the_slurm_script_is_bash_and_its_service_line_parses():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    (service,) = _sbatch_commands("vlmtune")
    assert service[0] == "service" and "--executor" in service and service[service.index("--executor") + 1] == "ray"
    _parse(main, service)


def test_the_slurm_scripts_ray_lines_parse_with_rays_cli():
    scripts = pytest.importorskip("ray.scripts.scripts")
    commands = _sbatch_commands("ray")
    assert [c[:2] for c in commands] == [["start", "--head"], ["job", "list"], ["start", "--address=1:1"]]
    for args in commands:
        _parse(scripts.cli, args)
