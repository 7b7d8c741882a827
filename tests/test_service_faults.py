"""Faults the job runner survives: a stop request, kill -9 of a worker, kill -9 of the service, a full queue.

Every test here runs real worker processes (and some a real `vlmtune service` process), so they are slow.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from service_fixtures import bedrock, job_request, job_status, running_service, service_process, wait_for
from train_fixtures import write_chart_data
from vlmtune.training.metric_logging import TRAIN_CSV, read_csv

pytestmark = pytest.mark.slow


@pytest.fixture
def data(tmp_path) -> tuple[str, str, str]:
    train, val = write_chart_data(tmp_path / "data")
    return str(train), str(tmp_path / "out"), str(val)


def _training(client, arn: str) -> dict:
    """The job once its training phase has started (the first optimizer step is done)."""
    def check():
        job = client.get_model_customization_job(jobIdentifier=arn)
        assert job["status"] in ("InProgress", "Stopping"), job.get("failureMessage")
        return job if job["statusDetails"]["trainingDetails"]["status"] == "InProgress" else None

    return wait_for(check, timeout=300, what="training to start")


def _job_folder(home: Path, arn: str) -> Path:
    return home / "jobs" / arn.rsplit("/", 1)[1]


def test_stopping_a_running_job_checkpoints_and_ends_stopped(tmp_path, data):
    train, out, val = data
    with running_service(tmp_path / "home") as server:
        client = bedrock(server.url)
        arn = client.create_model_customization_job(**job_request("long", train, out, val, epochCount="3", batchSize="2"))["jobArn"]
        _training(client, arn)
        client.stop_model_customization_job(jobIdentifier=arn)
        assert client.get_model_customization_job(jobIdentifier=arn)["status"] == "Stopping"
        job = job_status(client, arn, timeout=120)
        assert job["status"] == "Stopped" and job["statusDetails"]["trainingDetails"]["status"] == "Stopped"
        run = _job_folder(tmp_path / "home", arn) / "run"
        steps = len(read_csv(run / TRAIN_CSV))
        assert 0 < steps < 36 and (run / "checkpoints" / f"step-{steps:08d}" / "trainer_state.json").is_file()
        assert not (run / "run_complete.json").exists()
        assert client.list_custom_models()["modelSummaries"] == []


def test_kill_9_of_a_worker_fails_its_job_and_the_service_answers(tmp_path, data):
    train, out, val = data
    with running_service(tmp_path / "home") as server:
        client = bedrock(server.url)
        arn = client.create_model_customization_job(**job_request("victim", train, out, val, epochCount="3", batchSize="2"))["jobArn"]
        _training(client, arn)
        run = server.service.store.one("SELECT handle FROM worker_runs WHERE job_arn = ?", (arn,))
        os.kill(json.loads(run["handle"])["pid"], signal.SIGKILL)
        job = job_status(client, arn, timeout=60)
        assert job["status"] == "Failed"
        assert job["failureMessage"].startswith("the job's worker was killed by SIGKILL (out of memory, or kill -9); "
                                                "`vlmtune jobs logs victim` shows its log")
        assert job["statusDetails"]["trainingDetails"]["status"] == "Failed"
        assert [j["jobName"] for j in client.list_model_customization_jobs()["modelCustomizationJobSummaries"]] == ["victim"]
        # The service still runs jobs: the next one completes.
        after = client.create_model_customization_job(**job_request("after", train, out))["jobArn"]
        assert job_status(client, after)["status"] == "Completed"


def test_two_jobs_submitted_at_once_run_one_after_the_other(tmp_path, data):
    train, out, _ = data
    with running_service(tmp_path / "home") as server:
        client = bedrock(server.url)
        first = client.create_model_customization_job(**job_request("first", train, out))["jobArn"]
        second = client.create_model_customization_job(**job_request("second", train, out))["jobArn"]
        _training(client, first)
        waiting = client.get_model_customization_job(jobIdentifier=second)
        assert waiting["status"] == "InProgress"
        assert {v["status"] for v in waiting["statusDetails"].values()} == {"NotStarted"}
        assert job_status(client, first)["status"] == "Completed"
        assert job_status(client, second)["status"] == "Completed"
        runs = {r["job_arn"]: r for r in server.service.store.query("SELECT * FROM worker_runs")}
        assert runs[second]["started_at"] >= runs[first]["ended_at"]


def test_kill_9_of_the_service_mid_job_then_restart_resumes_to_the_same_final_loss(tmp_path, data):
    train, out, val = data
    home, log = tmp_path / "home", tmp_path / "service.log"
    hyper = {"epochCount": "3", "save_every_steps": "1"}
    with service_process(home, log) as (proc, url):
        arn = bedrock(url).create_model_customization_job(**job_request("resumed", train, out, val, **hyper))["jobArn"]
        folder = _job_folder(home, arn)
        wait_for(lambda: (folder / "run" / "checkpoints" / "step-00000004" / "trainer_state.json").is_file(), timeout=300,
                 every=0.05, what="the fourth checkpoint")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (folder / "run" / "run_complete.json").exists(), "the job finished before the service could be killed"
    with service_process(home, log) as (proc, url):
        client = bedrock(url)
        resumed = job_status(client, arn)
        assert resumed["status"] == "Completed", resumed.get("failureMessage")
        reference = job_status(client, client.create_model_customization_job(**job_request("reference", train, out, val, **hyper))["jobArn"])
    text = (folder / "worker.log").read_text()
    assert "resuming it from its last checkpoint" in text and "resuming from" in text and "starting attempt 2" in text
    losses = [r["training_loss"] for r in read_csv(folder / "run" / TRAIN_CSV)]
    expected = [r["training_loss"] for r in read_csv(_job_folder(home, reference["jobArn"]) / "run" / TRAIN_CSV)]
    assert len(losses) == 9 and losses == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert resumed["trainingMetrics"]["trainingLoss"] == pytest.approx(reference["trainingMetrics"]["trainingLoss"], rel=1e-5)


def test_with_on_restart_fail_a_job_cut_off_by_the_service_dying_ends_failed(tmp_path, data):
    train, out, _ = data
    home, log = tmp_path / "home", tmp_path / "service.log"
    with service_process(home, log) as (proc, url):
        arn = bedrock(url).create_model_customization_job(**job_request("doomed", train, out, epochCount="3", batchSize="2"))["jobArn"]
        _training(bedrock(url), arn)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with service_process(home, log, "--on-restart", "fail") as (proc, url):
        job = bedrock(url).get_model_customization_job(jobIdentifier=arn)
    assert job["status"] == "Failed"
    assert job["failureMessage"].startswith("the service stopped while the job ran, and it is set not to resume jobs on restart")


def test_stopping_the_service_suspends_running_jobs_and_a_restart_resumes_them(tmp_path, data):
    from vlmtune.service.store import Store

    train, out, val = data
    home, log = tmp_path / "home", tmp_path / "service.log"
    with service_process(home, log) as (proc, url):
        arn = bedrock(url).create_model_customization_job(**job_request("suspended", train, out, val, epochCount="3", batchSize="2"))["jobArn"]
        _training(bedrock(url), arn)
        proc.terminate()  # SIGTERM, as a service manager stops it: a graceful shutdown, then the signal's own exit
        assert proc.wait(timeout=180) in (0, -signal.SIGTERM)
    folder = _job_folder(home, arn)
    assert json.loads((folder / "progress.json").read_text())["outcome"] == "Suspended"
    steps = len(read_csv(folder / "run" / TRAIN_CSV))
    assert 0 < steps < 36 and (folder / "run" / "checkpoints" / f"step-{steps:08d}").is_dir()
    store = Store.open(home)
    assert store.one("SELECT status FROM customization_jobs WHERE arn = ?", (arn,))["status"] == "InProgress"
    store.close()
    with service_process(home, log) as (proc, url):
        assert job_status(bedrock(url), arn)["status"] == "Completed"
    text = " ".join((folder / "worker.log").read_text().split())  # rich wraps long lines
    assert "starting attempt 2" in text and f"resuming from {folder / 'run' / 'checkpoints' / f'step-{steps:08d}'} (step {steps} of 36)" in text
    assert [r["step_number"] for r in read_csv(folder / "run" / TRAIN_CSV)] == list(range(1, 37))
