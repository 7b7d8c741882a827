"""The executor seam without a cluster: choosing an executor, job placement, how Ray's ends read, log copying.

The Ray cluster itself is tested in test_service_ray.py (slow); here each part is driven with fakes.
"""

from __future__ import annotations

import asyncio
import sys
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from service_fixtures import job_request
from vlmtune.cli import main
from vlmtune.errors import VlmtuneError
from vlmtune.io import write_json
from vlmtune.service import customization, invocations
from vlmtune.service.app import Service
from vlmtune.service.config import ServiceConfig
from vlmtune.service.errors import ValidationError
from vlmtune.service.placement import Placement, for_job, split
from vlmtune.service.progress import LOG, PROGRESS, Progress, read_json
from vlmtune.service.ray_logs import COPIED, LogFollower


class OneProcessExecutor:
    name = "one-process"
    outlives_service = False
    spans_nodes = False

    def slots(self) -> int:
        return 0


# ---------------------------------------------------------------------------------------- choosing an executor
def test_without_ray_the_ray_executor_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: `import ray` raises ImportError
    monkeypatch.setitem(sys.modules, "ray.job_submission", None)
    monkeypatch.delitem(sys.modules, "vlmtune.service.ray_executor", raising=False)
    result = CliRunner().invoke(main, ["service", "--home", str(tmp_path / "home"), "--executor", "ray", "--port", "0"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("error: --executor ray: Ray is not installed here")
    assert "pip install 'vlmtune[ray]'" in result.output and "Traceback" not in result.output


def test_an_unknown_executor_is_refused_naming_the_choices(tmp_path):
    result = CliRunner().invoke(main, ["service", "--home", str(tmp_path / "home"), "--executor", "slurm"])
    assert result.exit_code == 2 and "'slurm' is not one of 'local', 'ray'" in result.output


def test_ray_env_takes_name_value_pairs_as_its_help_says(tmp_path, monkeypatch):
    assert "--ray-env NAME=VALUE" in " ".join(CliRunner().invoke(main, ["service", "--help"]).output.split())
    seen = {}
    monkeypatch.setattr("vlmtune.service.app.Service", lambda cfg: seen.setdefault("cfg", cfg) and sys.exit(0))
    CliRunner().invoke(main, ["service", "--home", str(tmp_path), "--ray-env", "HF_HOME=/shared/hf", "--ray-env", "A=1"])
    assert seen["cfg"].ray_env == {"HF_HOME": "/shared/hf", "A": "1"}


# ---------------------------------------------------------------------------------------- placement
def test_placement_settings_are_taken_out_of_the_hyperparameters_and_checked():
    training, asked = split({"epochCount": "2", "workers": "4", "gpus_per_worker": "8"})
    assert training == {"epochCount": "2"} and asked == {"workers": 4, "gpus_per_worker": 8}
    cfg = ServiceConfig(ray_workers=2, ray_gpus_per_worker=1)
    assert for_job({"workers": "3"}, cfg) == Placement(3, 1) and for_job({}, cfg) == Placement(2, 1)
    assert Placement(2, 4).processes == 8 and Placement(2, 0).processes == 2 and Placement(2, 0).describe() == "2 workers x CPUs only"
    for bad, message in (({"workers": "0"}, "workers: expected a whole number, 1 or more, found '0'"),
                         ({"gpus_per_worker": "1.5"}, "gpus_per_worker: expected a whole number, 0 or more, found '1.5'")):
        with pytest.raises(ValidationError, match=message):
            split(bad)


def test_a_job_asking_for_workers_is_refused_by_an_executor_of_one_process(tmp_path):
    (tmp_path / "train.jsonl").write_text("{}\n")
    svc = Service(ServiceConfig(home=tmp_path / "home"), OneProcessExecutor())
    request = job_request("spread", str(tmp_path / "train.jsonl"), str(tmp_path / "out"), workers="2")
    with pytest.raises(ValidationError, match=r"hyperParameters: workers: placing a job on several workers or GPUs needs the Ray "
                                              r"executor \(vlmtune service --executor ray\)"):
        customization.create(svc, request)
    arn = customization.create(svc, job_request("plain", str(tmp_path / "train.jsonl"), str(tmp_path / "out")))["jobArn"]
    spec = customization.spec(svc, svc.store.one("SELECT * FROM customization_jobs WHERE arn = ?", (arn,)))
    assert "placement" not in spec and "workers" not in spec["hyperParameters"]


def test_a_spanning_executor_gets_the_placement_in_the_spec_and_the_recipe_never_sees_it(tmp_path):
    (tmp_path / "train.jsonl").write_text("{}\n")
    spanning = OneProcessExecutor()
    spanning.spans_nodes = True
    svc = Service(ServiceConfig(home=tmp_path / "home", ray_gpus_per_worker=2), spanning)
    arn = customization.create(svc, job_request("spread", str(tmp_path / "train.jsonl"), str(tmp_path / "out"), workers="3"))["jobArn"]
    row = svc.store.one("SELECT * FROM customization_jobs WHERE arn = ?", (arn,))
    spec = customization.spec(svc, row)
    assert spec["placement"] == {"workers": 3, "gpus_per_worker": 2} and "workers" not in spec["hyperParameters"]
    assert customization.get(svc, arn)["hyperParameters"]["workers"] == "3"  # the job shows what it was asked


def test_a_batch_job_on_a_spanning_executor_asks_for_one_gpu_at_most(tmp_path):
    spanning = OneProcessExecutor()
    spanning.spans_nodes = True
    svc = Service(ServiceConfig(home=tmp_path / "home", ray_gpus_per_worker=4), spanning)
    row = {"id": "b1", "arn": "arn:b1", "name": "batch", "model_id": "m", "model_source": '{"source": "tiny"}',
           "input_data": '{"s3InputDataConfig": {"s3Uri": "s3://b/in/"}}', "output_data": '{"s3OutputDataConfig": {"s3Uri": "s3://b/out/"}}'}
    assert invocations.spec(svc, row)["placement"] == {"workers": 1, "gpus_per_worker": 1}


# ---------------------------------------------------------------------------------------- how Ray's ends read
def _info(status: str, message: str | None = None, code: int | None = None):
    from ray.job_submission import JobStatus

    return SimpleNamespace(status=JobStatus(status), message=message, driver_exit_code=code, submission_id="vlmtune-x-1")


def test_rays_statuses_become_the_runners_exits(tmp_path):
    pytest.importorskip("ray.job_submission")
    from vlmtune.service.ray_executor import ray_exit

    logs = "\n".join(f"line {i}" for i in range(9))
    failed = ray_exit(_info("FAILED", f"Job entrypoint command failed with exit code 127, last available logs (truncated to 20,000 chars):\n"
                                      f"{logs}\nsh: 1: vlmtune: not found\n", 127), tmp_path)
    assert failed.code == 127 and failed.reason == ("failed on the Ray cluster (Ray job vlmtune-x-1): Job entrypoint command failed "
                                                    "with exit code 127; its log ends: line 5 | line 6 | line 7 | line 8 | sh: 1: vlmtune: not found")
    assert ray_exit(_info("STOPPED"), tmp_path).reason == "was stopped on the Ray cluster (Ray job vlmtune-x-1)"
    unshared = ray_exit(_info("SUCCEEDED"), tmp_path)  # the worker wrote its progress somewhere the service cannot see
    assert unshared.code == 0 and "without reporting how the job went" in unshared.reason and "(--storage)" in unshared.reason
    write_json(tmp_path / "progress.json", {"outcome": "Completed"})
    assert ray_exit(_info("SUCCEEDED"), tmp_path).reason == "exited with code 0 on the Ray cluster"


def test_a_ray_job_is_lost_only_when_the_cluster_says_it_does_not_know_it():
    pytest.importorskip("ray.job_submission")
    from vlmtune.service.ray_executor import RayExecutor

    class Client:  # as JobSubmissionClient answers: a job it knows, a 404, a cluster that does not answer
        def get_job_status(self, submission):
            if submission == "known":
                return _info("RUNNING").status
            raise {"unknown": RuntimeError("Request failed with status code 404: Job unknown does not exist."),
                   "unreachable": ConnectionError("Connection refused")}[submission]

    executor = RayExecutor(Client(), "http://127.0.0.1:8265")
    assert [executor.lost({"submission": s}) for s in ("known", "unknown", "unreachable")] == [False, True, False]


def test_the_runtime_environment_joins_the_files_variables_and_the_options(tmp_path):
    pytest.importorskip("ray.job_submission")
    from vlmtune.service.ray_executor import runtime_env

    path = tmp_path / "env.yaml"
    path.write_text("pip: [vlmtune]\nenv_vars: {HF_HOME: /cache, N: 1}\n")
    env = runtime_env(path, {"N": "2"})
    assert env["pip"] == ["vlmtune"] and env["env_vars"] == {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
                                                              "HF_HOME": "/cache", "N": "2"}
    path.write_text("- just a list\n")
    with pytest.raises(VlmtuneError, match=r"env.yaml: expected a mapping \(pip, env_vars, ...\), found list"):
        runtime_env(path, {})


# ---------------------------------------------------------------------------------------- a Ray job's log
class FakeLogs:
    """tail_job_logs as Ray's SDK gives it: the whole log from the start, in chunks; `drop` cuts the stream."""

    def __init__(self, chunks: list[str], drop_after: int | None = None):
        self.chunks, self.drop_after, self.tails = chunks, drop_after, 0

    async def tail_job_logs(self, submission: str):
        self.tails += 1
        for i, chunk in enumerate(self.chunks):
            if self.tails == 1 and self.drop_after is not None and i == self.drop_after:
                raise RuntimeError("connection closed before the job ended")
            await asyncio.sleep(0)
            yield chunk

    def get_job_status(self, submission: str):
        return SimpleNamespace(is_terminal=lambda: False)  # still running: follow again


def test_a_ray_jobs_log_is_copied_once_across_dropped_connections_and_restarts(tmp_path, monkeypatch):
    monkeypatch.setattr("vlmtune.service.ray_logs.RETRY", 0.01)
    (tmp_path / LOG).write_text("[vlmtune service] starting\n")
    chunks = ["a\nb\n", "c\n", "d\ne\n"]
    client = FakeLogs(chunks, drop_after=2)
    assert LogFollower(client, "job-1", tmp_path).start().finished(wait=10)
    assert client.tails == 2 and (tmp_path / LOG).read_text() == "[vlmtune service] starting\na\nb\nc\nd\ne\n"
    # A restarted service follows the same Ray job again: nothing is copied twice, what is new is added.
    again = FakeLogs([*chunks, "f\n"])
    assert LogFollower(again, "job-1", tmp_path).start().finished(wait=10)
    assert (tmp_path / LOG).read_text().endswith("c\nd\ne\nf\n") and (tmp_path / LOG).read_text().count("a\n") == 1
    # The next attempt is another Ray job: its log is copied whole.
    assert LogFollower(FakeLogs(["a\n"]), "job-2", tmp_path).start().finished(wait=10)
    assert (tmp_path / LOG).read_text().endswith("f\na\n") and (tmp_path / COPIED).is_file()


# ---------------------------------------------------------------------------------------- the worker's side
def test_progress_takes_up_what_the_main_training_process_wrote(tmp_path):
    mine = Progress(tmp_path)
    mine.phase("dataProcessing", "InProgress")
    theirs = Progress(tmp_path)  # the main training process of a spread job, in its own process
    theirs.phase("dataProcessing", "Completed")
    theirs.phase("training", "InProgress")
    mine.reload()
    mine.finish("Failed", "it broke", phase=mine.current)
    state = read_json(tmp_path / PROGRESS)
    assert state["phases"]["dataProcessing"]["status"] == "Completed" and state["phases"]["training"]["status"] == "Failed"
    assert state["failedPhase"] == "training"
