"""The service on a loopback port with the official boto3 clients, and S3 through moto's server.

`running_service` starts a real Service (uvicorn on 127.0.0.1, workers as real subprocesses) in a temporary
home; `IdleExecutor` is an executor that never starts a worker, so API tests can keep jobs queued.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

API_KEY = "service-key"
ROLE = "arn:aws:iam::123456789012:role/vlmtune-test"
NO_RETRIES = Config(retries={"max_attempts": 1}, read_timeout=120)


class IdleExecutor:
    """Starts nothing: every job stays queued (InProgress, all phases NotStarted)."""

    name = "idle"
    outlives_service = False
    spans_nodes = False

    def slots(self) -> int:
        return 0

    def launch(self, folder: Path, slot: int) -> dict:
        raise AssertionError("the idle executor starts no workers")

    def poll(self, handle: dict):
        return None

    def kill(self, handle: dict) -> None:
        pass

    def alive(self, handle: dict) -> bool:
        return False


@contextmanager
def running_service(home: Path, executor=None, **options) -> Iterator:
    from vlmtune.service.app import ServiceServer
    from vlmtune.service.config import ServiceConfig

    cfg = ServiceConfig(home=home, api_key=API_KEY, stop_timeout=60, **options)
    with ServiceServer(cfg, executor) as server:
        yield server


def bedrock(url: str, key: str = API_KEY):
    return boto3.client("bedrock", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key="unused", config=NO_RETRIES)


def runtime(url: str, key: str = API_KEY):
    return boto3.client("bedrock-runtime", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key="unused", config=NO_RETRIES)


def job_request(name: str, train: str, output: str, validation: str | None = None, **hyper: str) -> dict:
    """CreateModelCustomizationJob's arguments for a short tiny run."""
    request = {"jobName": name, "customModelName": f"{name}-model", "roleArn": ROLE, "baseModelIdentifier": "tiny",
               "trainingDataConfig": {"s3Uri": train}, "outputDataConfig": {"s3Uri": output},
               "hyperParameters": {"epochCount": "1", "batchSize": "8", "learningRateWarmupSteps": "0", "method": "full", "seed": "3"} | hyper}
    if validation:
        request["validationDataConfig"] = {"validators": [{"s3Uri": validation}]}
    return request


def wait_for(check: Callable[[], object], timeout: float = 300, every: float = 0.5, what: str = "the condition"):
    """Poll `check` until it returns something truthy; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"{what} did not happen within {timeout:g} s")


def job_status(client, arn: str, done: tuple[str, ...] = ("Completed", "Failed", "Stopped"), timeout: float = 300) -> dict:
    """The job once its status is one of `done`."""
    def check():
        job = client.get_model_customization_job(jobIdentifier=arn)
        return job if job["status"] in done else None

    return wait_for(check, timeout, what=f"job {arn} reaching {'/'.join(done)}")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on loopback; the service and its workers reach it through the standard settings."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "VLMTUNE_S3_ENDPOINT_URL")}
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "VLMTUNE_S3_ENDPOINT_URL": url})
    from vlmtune.data import s3

    s3._client.cache_clear()
    yield url
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    s3._client.cache_clear()
    server.stop()


def s3(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def upload_dataset(endpoint: str, folder: Path, bucket: str, prefix: str) -> None:
    """Every file under `folder` to s3://bucket/prefix/ (data files and their relative images)."""
    client = s3(endpoint)
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    for path in folder.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


@contextmanager
def service_process(home: Path, log: Path, *args: str) -> Iterator:
    """`vlmtune service` as its own process (so a test can kill -9 it); yields (process, url) once it answers."""
    import subprocess
    import sys

    env = dict(os.environ, VLMTUNE_API_KEY=API_KEY, HF_HUB_OFFLINE="1")
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vlmtune.cli", "service", "--home", str(home), "--port", "0", *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        url = wait_for(lambda: _announced(home, proc), timeout=240, every=0.5, what="the service announcing itself")
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=120)


def _announced(home: Path, proc) -> str | None:
    """The URL the service process wrote into its home, once it is this process's and /health answers."""
    import json
    import urllib.request

    if proc.poll() is not None:
        raise AssertionError(f"the service exited with code {proc.returncode}")
    try:
        state = json.loads((home / "service.json").read_text())
        if state["pid"] != proc.pid:
            return None
        with urllib.request.urlopen(state["url"] + "/health", timeout=5):
            return state["url"]
    except (OSError, ValueError, KeyError):
        return None
