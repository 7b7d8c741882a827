"""The Ray executor against a real Ray head on 127.0.0.1 (2 CPUs, 100 MB object store), through boto3's client.

A tiny job run as a Ray job ends Completed with the final loss of the same job under the local executor and
its artifacts on S3; a stop through the service ends it Stopped (the worker obeys stop.json) and so does a
worker that ignores the stop (Ray stops it); a worker command the cluster lacks fails the job with Ray's
reason; a job over 2 workers (gloo on CPUs, rendezvous set by actors in a placement group) follows the loss
curve of one worker. The head and every process it started are ended when the module is done.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from ray_fixtures import LOOPBACK, RayHead, ray_head
from service_fixtures import (
    API_KEY,
    bedrock,
    job_request,
    job_status,
    running_service,
    s3,
    s3_endpoint,  # noqa: F401 - a fixture
    upload_dataset,
    wait_for,
)
from train_fixtures import write_chart_data
from vlmtune.cli import main
from vlmtune.service.store import loads

try:
    from ray.job_submission import JobSubmissionClient
except ImportError:
    if os.environ.get("CI"):
        raise  # CI installs the ray extra (make test): these tests must run there, not skip
    pytest.skip("Ray is not installed (pip install -e '.[ray]')", allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.ray]
BUCKET = "vlmtune-ray"


@pytest.fixture(scope="module")
def head(tmp_path_factory, s3_endpoint) -> Iterator[RayHead]:  # noqa: F811 - the workers reach S3 through the head's env
    # gloo would listen on the address the host name resolves to; the training processes' store binds MASTER_ADDR.
    with ray_head(tmp_path_factory.mktemp("ray"), dict(os.environ, GLOO_SOCKET_IFNAME="lo")) as cluster:
        yield cluster
    assert not cluster.processes(), "processes of the Ray cluster outlived it"


@contextmanager
def ray_service(home: Path, head: RayHead, **options) -> Iterator:
    from vlmtune.service.app import ServiceServer
    from vlmtune.service.config import ServiceConfig

    cfg = ServiceConfig(home=home, api_key=API_KEY, executor="ray", ray_address=head.address, ray_gpus_per_worker=0,
                        **{"stop_timeout": 60} | options)
    with ServiceServer(cfg) as server:
        yield server


@pytest.fixture(scope="module")
def service(tmp_path_factory, head):
    with ray_service(tmp_path_factory.mktemp("home"), head) as server:
        yield server


@pytest.fixture(scope="module")
def client(service):
    return bedrock(service.url)


@pytest.fixture(scope="module")
def charts(tmp_path_factory, s3_endpoint):  # noqa: F811
    folder = tmp_path_factory.mktemp("charts")
    write_chart_data(folder)
    upload_dataset(s3_endpoint, folder, BUCKET, "charts")
    return f"s3://{BUCKET}/charts/train.jsonl", f"s3://{BUCKET}/charts/val.jsonl"


def _request(name: str, charts, **hyper) -> dict:
    return job_request(name, charts[0], f"s3://{BUCKET}/output/", charts[1], **hyper)


def _ray_job(service, arn: str) -> str:
    """The Ray job (submission id) of the job's last worker run, from the service's own records."""
    run = service.service.store.one("SELECT handle FROM worker_runs WHERE job_arn = ? ORDER BY id DESC", (arn,))
    return loads(run["handle"])["submission"]


def _ray_status(head: RayHead, service, arn: str) -> str | None:
    """The Ray job's status; None until the service's submission (in the background) is through."""
    try:
        return str(JobSubmissionClient(head.address).get_job_status(_ray_job(service, arn)))
    except RuntimeError:
        return None


def _step_losses(endpoint: str, arn: str) -> list[float]:
    """The step-wise training losses the job delivered to its S3 output."""
    key = f"output/model-customization-job-{arn.rsplit('/', 1)[1]}/training_artifacts/step_wise_training_metrics.csv"
    csv = s3(endpoint).get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    return [float(line.split(",")[2]) for line in csv.strip().splitlines()[1:]]


@pytest.fixture(scope="module")
def on_ray(client, charts):
    return job_status(client, client.create_model_customization_job(**_request("on-ray", charts))["jobArn"], timeout=600)


def test_the_ray_head_listens_on_loopback_only(head):
    # The raylet may still be opening its sockets when the head answers (seen once on a loaded machine): wait for it.
    deadline = time.monotonic() + 60
    while True:
        listening = head.listening()
        names = {name for name, _, _ in listening}
        seen = {"gcs_server", "raylet"} <= names and len(listening) >= 6
        if seen or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert seen, sorted(listening)  # the head's servers were all seen
    assert {address for _, address, _ in listening} <= LOOPBACK, sorted(listening)


def test_a_ray_job_completes_with_the_local_executors_final_loss(head, service, on_ray, charts, s3_endpoint, tmp_path):  # noqa: F811
    assert on_ray["status"] == "Completed", on_ray.get("failureMessage")
    assert _ray_status(head, service, on_ray["jobArn"]) == "SUCCEEDED"
    with running_service(tmp_path / "local") as local:
        here = bedrock(local.url)
        on_local = job_status(here, here.create_model_customization_job(**_request("on-local", charts))["jobArn"], timeout=600)
    assert on_local["status"] == "Completed", on_local.get("failureMessage")
    assert on_ray["trainingMetrics"]["trainingLoss"] == pytest.approx(on_local["trainingMetrics"]["trainingLoss"], rel=1e-5)
    ray_losses, local_losses = _step_losses(s3_endpoint, on_ray["jobArn"]), _step_losses(s3_endpoint, on_local["jobArn"])
    assert len(ray_losses) == 3 and ray_losses == pytest.approx(local_losses, rel=1e-5)
    prefix = f"output/model-customization-job-{on_ray['jobArn'].rsplit('/', 1)[1]}/"
    keys = {o["Key"].removeprefix(prefix) for o in s3(s3_endpoint).list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]}
    assert {"model/model.safetensors", "training_artifacts/step_wise_training_metrics.csv", "validation_report.txt"} <= keys


def test_the_ray_jobs_log_is_the_jobs_log(service, on_ray):
    logs = CliRunner().invoke(main, ["jobs", "logs", "on-ray", "--endpoint", service.url, "--api-key", API_KEY])
    assert logs.exit_code == 0, logs.output
    submission = _ray_job(service, on_ray["jobArn"])
    assert f"submitted as Ray job {submission}" in logs.output and f"Running entrypoint for job {submission}" in logs.output
    assert logs.output.count("step 3/3  epoch") == 1  # Ray's log, copied once


def test_a_stop_through_the_service_ends_the_ray_job_stopped(head, service, client, charts):
    arn = client.create_model_customization_job(**_request("stopped", charts, epochCount="40"))["jobArn"]
    wait_for(lambda: client.get_model_customization_job(jobIdentifier=arn)["statusDetails"]["trainingDetails"]["status"] == "InProgress",
             timeout=300, what="training under way")
    client.stop_model_customization_job(jobIdentifier=arn)
    job = job_status(client, arn, timeout=300)
    assert job["status"] == "Stopped" and job["statusDetails"]["trainingDetails"]["status"] == "Stopped"
    assert list((service.service.job_folder(arn.rsplit("/", 1)[1]) / "run" / "checkpoints").iterdir())  # it checkpointed
    # The worker stopped itself (stop.json): Ray saw it exit.
    assert _ray_status(head, service, arn) == "SUCCEEDED"


def test_a_worker_that_ignores_the_stop_is_stopped_through_ray(head, tmp_path, charts):
    # A "worker" that never reads stop.json: the runner's kill after --stop-timeout is Ray's stop.
    with ray_service(tmp_path / "home", head, ray_worker_command="sh -c 'sleep 600' --", stop_timeout=1) as stubborn:
        client = bedrock(stubborn.url)
        arn = client.create_model_customization_job(**_request("stubborn", charts))["jobArn"]
        wait_for(lambda: _ray_status(head, stubborn, arn) == "RUNNING", timeout=180, what="the Ray job running")
        client.stop_model_customization_job(jobIdentifier=arn)
        job = job_status(client, arn, timeout=180)
        assert job["status"] == "Stopped"
        assert _ray_status(head, stubborn, arn) == "STOPPED"
        log = (stubborn.service.job_folder(arn.rsplit("/", 1)[1]) / "worker.log").read_text()
        assert "did not stop within 1 s of the stop request; killing it" in log


def test_a_job_whose_entrypoint_fails_is_failed_with_rays_reason(head, tmp_path, charts):
    with ray_service(tmp_path / "home", head, ray_worker_command="vlmtune-not-installed worker") as broken:
        client = bedrock(broken.url)
        arn = client.create_model_customization_job(**_request("no-worker", charts))["jobArn"]
        job = job_status(client, arn, timeout=180)
        submission = _ray_job(broken, arn)
    assert job["status"] == "Failed"
    message = job["failureMessage"]
    assert message.startswith(f"the job's worker failed on the Ray cluster (Ray job {submission}): "
                              "Job entrypoint command failed with exit code 127; its log ends: ")
    assert "vlmtune-not-installed: not found" in message


def test_two_workers_on_gloo_follow_the_loss_curve_of_one(head, service, client, charts, on_ray, s3_endpoint):  # noqa: F811
    arn = client.create_model_customization_job(**_request("two-workers", charts, workers="2"))["jobArn"]
    listening, trained = _sockets_until_done(head, client, arn)
    job = client.get_model_customization_job(jobIdentifier=arn)
    assert job["status"] == "Completed", job.get("failureMessage")
    two, one = _step_losses(s3_endpoint, arn), _step_losses(s3_endpoint, on_ray["jobArn"])
    assert len(two) == len(one) == 3 and two == pytest.approx(one, rel=1e-4)
    folder = service.service.job_folder(arn.rsplit("/", 1)[1])
    assert "training on 2 workers x CPUs only: 2 processes" in (folder / "worker.log").read_text()
    # While the two training processes ran (their process group's store and gloo included), all of it listened on loopback.
    assert trained and {address for _, address, _ in listening} <= LOOPBACK, sorted(listening)


def test_a_stop_reaches_every_training_process_of_a_two_worker_job(head, service, client, charts):
    arn = client.create_model_customization_job(**_request("two-stopped", charts, workers="2", epochCount="40"))["jobArn"]
    wait_for(lambda: client.get_model_customization_job(jobIdentifier=arn)["statusDetails"]["trainingDetails"]["status"] == "InProgress",
             timeout=600, what="training under way")
    client.stop_model_customization_job(jobIdentifier=arn)
    job = job_status(client, arn, timeout=300)  # the second process stops at the step the first one does, or all would hang
    assert job["status"] == "Stopped" and job["statusDetails"]["trainingDetails"]["status"] == "Stopped"
    assert _ray_status(head, service, arn) == "SUCCEEDED"
    folder = service.service.job_folder(arn.rsplit("/", 1)[1])
    assert list((folder / "run" / "checkpoints").iterdir())
    assert not [command for command in head.commands() if "--training-process" in command]


def _sockets_until_done(head: RayHead, client, arn: str, timeout: float = 900) -> tuple[list, bool]:
    """Every socket the cluster's processes listened on while the job ran, and whether its training processes were seen."""
    seen, trained = set(), False
    deadline = time.monotonic() + timeout
    while client.get_model_customization_job(jobIdentifier=arn)["status"] in ("InProgress", "Stopping"):
        assert time.monotonic() < deadline, f"job {arn} did not end within {timeout:g} s"
        trained |= any("--training-process" in command for command in head.commands())
        seen |= set(head.listening())
        time.sleep(0.5)
    return sorted(seen), trained
