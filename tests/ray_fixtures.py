"""A small Ray head on 127.0.0.1 for the Ray executor's tests, stopped with everything it started.

Ray turns `--node-ip-address=127.0.0.1` into the machine's routable address unless its single-machine mode is
on (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, the mode macOS and Windows run in): only then does every server it
starts bind loopback. Every port is a free one (other test runs may have a cluster of their own), the head
has 2 CPUs and a 100 MB object store, and every process of it carries a marker in its environment, so the
teardown finds and ends each one by its pid (never `ray stop`, which ends every Ray process of the machine).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

MARKER = "VLMTUNE_TEST_RAY_CLUSTER"
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
PORT_OPTIONS = ("port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                "runtime-env-agent-port", "metrics-export-port", "node-manager-port", "object-manager-port")
PORT_ENV = ("AUTOSCALER_METRIC_PORT", "DASHBOARD_METRIC_PORT")  # fixed ports otherwise (44217, 44227)


@dataclass
class RayHead:
    address: str  # the Jobs API (dashboard), http://127.0.0.1:PORT
    marker: str
    log: Path

    def processes(self) -> list[psutil.Process]:
        """Every live process of this cluster: the head's, its workers', the jobs' and what those started."""
        return marked_processes(self.marker)

    def commands(self) -> list[str]:
        """The command lines of the cluster's processes."""
        found = []
        for proc in self.processes():
            try:
                found.append(" ".join(proc.cmdline()))
            except psutil.Error:
                continue
        return found

    def listening(self) -> list[tuple[str, str, int]]:
        """(process name, address, port) of every socket the cluster's processes listen on."""
        found = []
        for proc in self.processes():
            try:
                found += [(proc.name(), c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
            except psutil.Error:
                continue
        return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def marked_processes(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER) == marker:
                found.append(proc)
        except psutil.Error:
            continue
    return found


@contextmanager
def ray_head(folder: Path, env: dict[str, str]) -> Iterator[RayHead]:
    """`ray start --head --block` on loopback in its own session; all of it ended on the way out."""
    marker = secrets.token_hex(8)
    ports = {option: free_port() for option in PORT_OPTIONS}
    bin_dir = str(Path(sys.executable).parent)
    env = dict(env, PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_USAGE_STATS_ENABLED="0", **{MARKER: marker}, **{name: str(free_port()) for name in PORT_ENV})
    command = [str(Path(bin_dir) / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
               "--num-cpus=2", "--num-gpus=0", "--object-store-memory=100000000", f"--temp-dir={folder / 'ray'}",
               "--disable-usage-stats", "--include-dashboard=true", *(f"--{option}={port}" for option, port in ports.items())]
    log = folder / "ray-head.log"
    with open(log, "ab") as out:
        head = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder,
                                start_new_session=True)
    cluster = RayHead(f"http://127.0.0.1:{ports['dashboard-port']}", marker, log)
    try:
        _wait_for_jobs_api(cluster, head)
        yield cluster
    finally:
        stop_cluster(head, marker)


def _wait_for_jobs_api(cluster: RayHead, head: subprocess.Popen, timeout: float = 180) -> None:
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with code {head.returncode}: {cluster.log.read_text()[-3000:]}")
        try:
            JobSubmissionClient(cluster.address).list_jobs()
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(1)
    raise RuntimeError(f"the Ray head did not answer within {timeout:g} s: {cluster.log.read_text()[-3000:]}")


def stop_cluster(head: subprocess.Popen, marker: str, grace: float = 20) -> None:
    """SIGTERM to the head's process group, then SIGKILL to whatever of the cluster is left, by pid."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    for proc in marked_processes(marker):
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(marked_processes(marker), timeout=10)
    head.wait(timeout=10)
