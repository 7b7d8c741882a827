"""The job runner tick by tick, with an executor the test controls: forced stops, deaths, restarts, slots.

No worker processes and no HTTP: the Service's own modules are called directly, as its routes call them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from service_fixtures import job_request, wait_for
from vlmtune.errors import VlmtuneError
from vlmtune.io import write_json
from vlmtune.service import customization, deployments, imports
from vlmtune.service.app import Service
from vlmtune.service.config import ServiceConfig
from vlmtune.service.executor import WorkerExit
from vlmtune.service.progress import PROGRESS, STOP


class FakeExecutor:
    """Workers that exist only as handles: the test says when and how each ends."""

    name = "fake"
    spans_nodes = False

    def __init__(self, slots: int = 1, outlives_service: bool = False):
        self._slots, self.outlives_service = slots, outlives_service
        self.launched: list[Path] = []
        self.exits: dict[int, WorkerExit] = {}
        self.killed: list[int] = []
        self.gone_after_restart: set[int] = set()

    def slots(self) -> int:
        return self._slots

    def launch(self, folder: Path, slot: int) -> dict:
        self.launched.append(folder)
        return {"pid": len(self.launched), "slot": slot, "folder": str(folder)}

    def poll(self, handle: dict):
        return self.exits.get(handle["pid"])

    def kill(self, handle: dict) -> None:
        self.killed.append(handle["pid"])
        self.exits[handle["pid"]] = WorkerExit(-9, "was killed by SIGKILL (out of memory, or kill -9)")

    def alive(self, handle: dict) -> bool:
        return handle["pid"] not in self.gone_after_restart

    def lost(self, handle: dict) -> bool:  # the cluster was restarted too: it no longer knows the worker
        return handle["pid"] in self.gone_after_restart


@pytest.fixture
def data(tmp_path):
    (tmp_path / "train.jsonl").write_text("{}\n")
    return str(tmp_path / "train.jsonl"), str(tmp_path / "out")


def _service(home: Path, executor: FakeExecutor, **options) -> Service:
    return Service(ServiceConfig(home=home, **options), executor)


def _job(svc: Service, arn: str) -> dict:
    return customization.get(svc, arn)


def test_jobs_wait_for_a_free_slot_oldest_first(tmp_path, data):
    executor = FakeExecutor(slots=1)
    svc = _service(tmp_path / "home", executor)
    first = customization.create(svc, job_request("first", *data))["jobArn"]
    second = customization.create(svc, job_request("second", *data))["jobArn"]
    svc.runner.tick()
    assert [f.name for f in executor.launched] == [first.rsplit("/", 1)[1]]
    assert json.loads((executor.launched[0] / "job.json").read_text())["hyperParameters"]["epochCount"] == "1"
    executor.exits[1] = WorkerExit(0, "exited with code 0")
    write_json(executor.launched[0] / PROGRESS, {"outcome": "Failed", "failureMessage": "bad data", "phases": {}})
    svc.runner.tick()
    assert _job(svc, first)["status"] == "Failed" and _job(svc, first)["failureMessage"] == "bad data"
    assert [f.name for f in executor.launched] == [first.rsplit("/", 1)[1], second.rsplit("/", 1)[1]]


def test_a_worker_that_ignores_a_stop_is_killed_after_the_timeout_and_the_job_ends_stopped(tmp_path, data):
    executor = FakeExecutor()
    svc = _service(tmp_path / "home", executor, stop_timeout=0.01)
    arn = customization.create(svc, job_request("stubborn", *data))["jobArn"]
    svc.runner.tick()
    customization.stop(svc, arn)
    assert _job(svc, arn)["status"] == "Stopping"
    svc.runner.tick()  # asks: stop.json
    assert json.loads((executor.launched[0] / STOP).read_text())["action"] == "stop" and not executor.killed
    time.sleep(0.05)
    svc.runner.tick()  # past the timeout: killed
    svc.runner.tick()
    assert executor.killed == [1] and _job(svc, arn)["status"] == "Stopped"
    assert "did not stop within" in (executor.launched[0] / "worker.log").read_text()


def test_a_dead_worker_fails_its_job_with_the_reason(tmp_path, data):
    executor = FakeExecutor()
    svc = _service(tmp_path / "home", executor)
    arn = customization.create(svc, job_request("dies", *data))["jobArn"]
    svc.runner.tick()
    write_json(executor.launched[0] / PROGRESS, {"outcome": None, "phases": {
        "validation": {"status": "Completed"}, "dataProcessing": {"status": "Completed"}, "training": {"status": "InProgress"}}})
    executor.exits[1] = WorkerExit(-9, "was killed by SIGKILL (out of memory, or kill -9)")
    svc.runner.tick()
    job = _job(svc, arn)
    assert job["status"] == "Failed" and job["failureMessage"].startswith("the job's worker was killed by SIGKILL")
    assert job["statusDetails"]["trainingDetails"]["status"] == "Failed"
    assert job["statusDetails"]["validationDetails"]["status"] == "Completed"


@pytest.mark.parametrize("policy", ["resume", "fail"])
def test_after_a_restart_a_job_whose_worker_is_gone_resumes_or_fails_by_setting(tmp_path, data, policy):
    home = tmp_path / "home"
    executor = FakeExecutor()
    svc = _service(home, executor)
    arn = customization.create(svc, job_request("cut-off", *data))["jobArn"]
    svc.runner.tick()
    svc.store.close()  # the service dies here: no close(), the run stays open in the database
    again = FakeExecutor()
    again.gone_after_restart = {1}
    restarted = _service(home, again, on_restart=policy)
    restarted.runner.recover()
    restarted.runner.tick()
    if policy == "resume":
        assert [f.name for f in again.launched] == [arn.rsplit("/", 1)[1]] and _job(restarted, arn)["status"] == "InProgress"
        assert "resuming it from its last checkpoint" in (again.launched[0] / "worker.log").read_text()
    else:
        assert again.launched == [] and _job(restarted, arn)["status"] == "Failed"
        assert "set not to resume jobs on restart" in _job(restarted, arn)["failureMessage"]


def test_workers_that_outlive_the_service_keep_running_and_are_watched_again_after_a_restart(tmp_path, data):
    """Ray jobs run on the cluster: a service that stops does not suspend them, and the next one adopts them."""
    home = tmp_path / "home"
    executor = FakeExecutor(outlives_service=True)
    svc = _service(home, executor)
    arn = customization.create(svc, job_request("on-a-cluster", *data))["jobArn"]
    svc.runner.tick()
    svc.close(timeout=0.1)
    assert not (executor.launched[0] / STOP).exists() and executor.killed == []  # left running, not suspended
    again = FakeExecutor(outlives_service=True)
    restarted = _service(home, again)
    restarted.runner.recover()
    restarted.runner.tick()
    assert again.launched == [] and again.killed == [] and restarted.runner.is_running(arn)  # the same worker, watched
    assert "watching the job's worker again (fake executor)" in (executor.launched[0] / "worker.log").read_text()
    write_json(executor.launched[0] / PROGRESS, {"outcome": "Failed", "failureMessage": "bad data", "phases": {}})
    again.exits[1] = WorkerExit(0, "exited with code 0")
    restarted.runner.tick()
    assert _job(restarted, arn)["status"] == "Failed" and _job(restarted, arn)["failureMessage"] == "bad data"


@pytest.mark.parametrize("policy", ["resume", "fail"])
def test_a_worker_the_restarted_cluster_no_longer_knows_resumes_as_a_local_one_does(tmp_path, data, policy):
    """A SLURM allocation that ended took the service and the Ray cluster with it: the next service, on a new
    cluster, resumes the job from its checkpoint on the shared storage instead of failing it as gone."""
    home = tmp_path / "home"
    executor = FakeExecutor(outlives_service=True)
    svc = _service(home, executor)
    arn = customization.create(svc, job_request("allocation-ended", *data))["jobArn"]
    svc.runner.tick()
    svc.close(timeout=0.1)
    again = FakeExecutor(outlives_service=True)
    again.gone_after_restart.add(1)
    restarted = _service(home, again, on_restart=policy)
    restarted.runner.recover()
    restarted.runner.tick()
    log = (executor.launched[0] / "worker.log").read_text()
    assert "no longer knows the job's worker" in log and "watching the job's worker again" not in log
    if policy == "resume":
        assert [f.name for f in again.launched] == [arn.rsplit("/", 1)[1]] and _job(restarted, arn)["status"] == "InProgress"
        assert "resuming it from its last checkpoint" in log
    else:
        assert again.launched == [] and _job(restarted, arn)["status"] == "Failed"


def test_a_deployment_whose_model_cannot_load_fails_with_the_reason(tmp_path):
    svc = _service(tmp_path / "home", FakeExecutor())
    weights = tmp_path / "gone"
    svc.store.insert("custom_models", {"id": "m" * 12, "arn": svc.arns.custom_model("vlmtune.tiny", "m" * 12), "name": "lost",
                                       "base_model_arn": "b", "base_model_name": "vlmtune.tiny", "customization_type": "FINE_TUNING",
                                       "weights": str(weights), "weights_kind": "model", "status": "Active", "creation_time": "t"})
    arn = svc.deployments.create({"modelDeploymentName": "lost", "modelArn": "lost"})["customModelDeploymentArn"]
    found = wait_for(lambda: (d := svc.deployments.get(arn))["status"] != "Creating" and d, timeout=60)
    assert found["status"] == "Failed" and found["failureMessage"].startswith(f"loading {svc.arns.custom_model('vlmtune.tiny', 'm' * 12)} failed")
    assert deployments.summary(svc.store.one("SELECT * FROM deployments"))["failureMessage"] == found["failureMessage"]


def test_an_unsupported_architecture_is_refused_naming_it(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    (tmp_path / "model.safetensors").write_bytes(b"\0")
    with pytest.raises(VlmtuneError, match=r"model_type 'bert' \(architecture BertModel\) is not a vision-language model vlmtune can load"):
        imports.check_model_folder(tmp_path)
