"""The dashboard's API without a browser: sign-in, run folders as the page reads them, the live stream's resume,
the form's ranges, the predictions browser's verdicts, and the files it will and will not serve.

One service (no workers: IdleExecutor) with run folders written here row by row, so every step is known.
"""

from __future__ import annotations

import json
import os

import httpx
import pytest

from dashboard_fixtures import scripted_eval
from service_fixtures import API_KEY, IdleExecutor, running_service
from train_fixtures import write_chart_data

TRAIN_HEADER = "step_number,epoch_number,training_loss,perplexity,learning_rate,grad_norm\n"
VAL_HEADER = "step_number,epoch_number,validation_loss,perplexity\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_service(tmp_path_factory.mktemp("home"), IdleExecutor()) as s:
        yield s


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url + "/dashboard/api", headers={"authorization": f"Bearer {API_KEY}"}, timeout=60) as c:
        yield c


def fake_run(home, name: str, steps: int, val_steps=(), total: int = 10, running: bool = True):
    """A run folder as `vlmtune train` writes it, `steps` rows in; a live lock (this process) when running."""
    folder = home / "runs" / name
    (folder / "training_artifacts").mkdir(parents=True, exist_ok=True)
    (folder / "run_config.yaml").write_text(f"format_version: 1\nmodel: tiny\ntrain_data: /data/{name}.jsonl\nlearning_rate: 0.001\n")
    write_rows(folder, steps)
    val = folder / "validation_artifacts/post_fine_tuning_validation/validation"
    val.mkdir(parents=True, exist_ok=True)
    (val / "validation_metrics.csv").write_text(VAL_HEADER + "".join(f"{s},1,{3.0 - s / 10},{2.0}\n" for s in val_steps))
    if running:
        (folder.parent / f".{name}.lock").write_text(f"{os.getpid()} host now\n")
    return folder


def write_rows(folder, steps: int, total: int = 10) -> None:
    rows = "".join(f"{s},1,{4.0 - s / 10},{50.0},{1e-3},{0.5}\n" for s in range(1, steps + 1))
    (folder / "training_artifacts/step_wise_training_metrics.csv").write_text(TRAIN_HEADER + rows)
    log = "".join(f"2026-01-01T00:00:{s:02d} step {s}/{total}  epoch 1/1  loss {4.0 - s / 10:.4f}  lr 1.00e-03  grad_norm 0.500  "
                  f"tokens/s {1000 + s:,}  eta 0:00:{total - s:02d}\n" for s in range(1, steps + 1))
    (folder / "train.log").write_text(log)


# ---------------------------------------------------------------------------------------- sign-in
def test_the_page_is_served_and_every_data_route_wants_the_key(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "dashboard/static/js/app.js" in page.text
    assert httpx.get(server.url + "/dashboard/static/vendor/uplot/uPlot.iife.min.js").status_code == 200
    assert httpx.get(server.url + "/dashboard/api/session").json() == {"authRequired": True, "signedIn": False, "home": str(server.service.home)}
    refused = httpx.get(server.url + "/dashboard/api/runs")
    assert refused.status_code == 403 and "sign in" in refused.json()["message"]
    assert httpx.get(server.url + "/dashboard/api/runs", headers={"authorization": "Bearer wrong"}).status_code == 403


def test_the_login_form_sets_a_cookie_that_is_not_the_key(server):
    with httpx.Client(base_url=server.url + "/dashboard/api") as browser:
        wrong = browser.post("/login", json={"key": "not-it"})
        assert wrong.status_code == 403 and not browser.cookies
        assert browser.post("/login", json={"key": API_KEY}).status_code == 200
        cookie = browser.cookies["vlmtune_session"]
        assert API_KEY not in cookie and browser.get("/runs").status_code == 200
        assert browser.get("/session").json()["signedIn"] is True
        # A POST that is not JSON (what another site's form could send) is refused even when signed in.
        assert browser.post("/jobs/stop", content="ref=job/x", headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 400
        browser.post("/logout", json={})
        assert browser.get("/runs").status_code == 403


# ---------------------------------------------------------------------------------------- runs
def test_a_command_line_run_under_the_home_is_listed_with_progress_eta_and_best_loss(server, api):
    home = server.service.home
    fake_run(home, "listed", steps=4, val_steps=(2, 4))
    found = {r["ref"]: r for r in api.get("/runs").json()["runs"]}
    run = found["cli/runs/listed"]
    assert run["source"] == "cli" and run["state"] == "Running" and run["data"] == "/data/listed.jsonl"
    assert run["progress"] == {"step": 4, "total": 10, "eta_s": 6, "tokens_per_s": 1004.0, "training_loss": 3.6,
                               "best_validation_loss": pytest.approx(2.6)}
    copy = home / "outputs" / "model-customization-job-x"  # a job's uploaded artifacts: a copy, not a run
    copy.mkdir(parents=True)
    (copy / "run_config.yaml").write_text(f"output: {home / 'jobs' / 'x' / 'run'}\nmodel: tiny\n")
    assert not any(r["folder"] == str(copy) for r in api.get("/runs").json()["runs"])
    (home / "runs" / ".listed.lock").unlink()  # the process is gone, the run unfinished
    assert {r["ref"]: r for r in api.get("/runs").json()["runs"]}["cli/runs/listed"]["state"] == "Interrupted"


def test_the_live_stream_resumes_from_last_event_id_without_repeating_a_row(server, api):
    home = server.service.home
    folder = fake_run(home, "live", steps=3, val_steps=(2,))
    first, cursor = read_update(api, "cli/runs/live")
    assert [r["step_number"] for r in first["train"]] == [1, 2, 3] and [r["step_number"] for r in first["val"]] == [2]
    assert first["status"]["state"] == "Running" and "step 3/10" in first["log"]
    write_rows(folder, 5)
    again, cursor = read_update(api, "cli/runs/live", cursor)
    assert [r["step_number"] for r in again["train"]] == [4, 5] and "val" not in again and "reset" not in again
    assert again["log"].startswith("2026-01-01T00:00:04 step 4/10") and again["log"].count("\n") == 2  # only the bytes after the cursor
    write_rows(folder, 2)  # a resumed run rewrites its CSV from the checkpoint: sent again, marked
    shrunk, cursor = read_update(api, "cli/runs/live", cursor)
    assert shrunk["reset"] == ["train", "speed"] and [r["step_number"] for r in shrunk["train"]] == [1, 2]
    (folder / "run_complete.json").write_text(json.dumps({"format_version": 1, "best_validation_loss": 2.8, "best_step": 2}))
    (home / "runs" / ".live.lock").unlink()
    done, cursor = read_update(api, "cli/runs/live", cursor)
    assert done["status"]["state"] == "Completed" and done["status"]["progress"]["best_validation_loss"] == 2.8
    events = stream_events(api, "cli/runs/live", cursor)
    # A reconnect hears the status first; then, nothing being new and the run over, the stream says so and ends.
    assert [(name, sorted(data or {})) for name, data in events] == [("update", ["status"]), ("end", [])]


def read_update(api, ref: str, cursor: str | None = None) -> tuple[dict, str]:
    """The first update event of a fresh connection (as a reconnecting EventSource makes it) and its id."""
    headers = {"last-event-id": cursor} if cursor else {}
    with api.stream("GET", "/run/stream", params={"ref": ref}, headers=headers) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        event = {}
        for line in response.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                key, _, value = line.partition(": ")
                event[key] = value
            elif not line and event.get("event") == "update":
                return json.loads(event["data"]), event["id"]
            elif not line:
                event = {}
    raise AssertionError("the stream ended without an update")


def stream_events(api, ref: str, cursor: str) -> list[tuple[str, dict | None]]:
    out = []
    with api.stream("GET", "/run/stream", params={"ref": ref}, headers={"last-event-id": cursor}) as response:
        event = {}
        for line in response.iter_lines():
            if line.startswith(("event:", "data:")):
                key, _, value = line.partition(": ")
                event[key] = value
            elif not line and event:
                out.append((event["event"], json.loads(event["data"]) or None))
                event = {}
    return out


def test_a_bad_cursor_and_files_outside_a_run_are_refused(server, api):
    fake_run(server.service.home, "files", steps=1, running=False)
    bad = api.get("/run/stream", params={"ref": "cli/runs/files"}, headers={"last-event-id": "1.2.x"})
    assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["message"]
    assert api.get("/run/file", params={"ref": "cli/runs/files", "path": "run_config.yaml"}).text.startswith("format_version")
    assert api.get("/run/file", params={"ref": "cli/runs/files", "path": "../../vlmtune.db"}).status_code == 404
    assert api.get("/run", params={"ref": "cli/../../etc"}).status_code == 404
    stop = api.post("/jobs/stop", json={"ref": "cli/runs/files"})
    assert stop.status_code == 400 and "command line" in stop.json()["message"]


# ---------------------------------------------------------------------------------------- the form
def test_the_form_shows_the_configs_ranges_under_the_service_names(api):
    from vlmtune.config import Hyperparameters
    from vlmtune.targets import TARGETS

    form = api.get("/form").json()
    fields = {f["name"]: f for f in form["service"]}
    assert list(fields) == ["epochCount", "batchSize", "learningRate", "learningRateWarmupSteps", "learningRateMultiplier",
                            "earlyStoppingPatience", "earlyStoppingThreshold"]
    epochs = Hyperparameters.model_fields["epochs"]
    assert (fields["epochCount"]["min"], fields["epochCount"]["max"], fields["epochCount"]["default"]) == (1, 100, epochs.default)
    assert fields["learningRate"]["min"] == 0 and fields["learningRate"]["minExclusive"] is True
    nova = TARGETS["nova-lite"].hyperparameters["learning_rate"]
    assert form["targets"]["nova-lite"]["learning_rate"] == {"min": nova.low, "max": nova.high, "default": nova.default}
    assert "tiny" in form["baseModels"] and "tiny-qwen2-vl" in form["baseModels"]


def test_a_job_from_the_form_is_checked_by_the_service(server, api):
    body = {"jobName": "too-many", "customModelName": "too-many-model", "roleArn": "arn:aws:iam::000000000000:role/x",
            "baseModelIdentifier": "tiny", "trainingDataConfig": {"s3Uri": "/data/train.jsonl"},
            "outputDataConfig": {"s3Uri": str(server.service.home / "outputs")}, "hyperParameters": {"epochCount": "500"}}
    refused = api.post("/jobs", json=body)
    assert refused.status_code == 400 and "'epochCount'" in refused.json()["message"] and "500" in refused.json()["message"]
    created = api.post("/jobs", json=body | {"hyperParameters": {"epochCount": "2"}})
    ref = "job/" + created.json()["jobArn"].rsplit("/", 1)[1]
    row = {r["ref"]: r for r in api.get("/runs").json()["runs"]}[ref]
    assert row["state"] == "Queued" and row["source"] == "service"  # no worker starts with the idle executor
    assert api.post("/jobs/stop", json={"ref": ref}).status_code == 200
    assert {r["ref"]: r for r in api.get("/runs").json()["runs"]}[ref]["state"] == "Stopped"


# ---------------------------------------------------------------------------------------- predictions
def test_the_predictions_browser_joins_a_compare_row_by_row_and_filters_the_wrong(server, api, tmp_path):
    from vlmtune.data.formats.detect import read_records
    from vlmtune.reports.compare import compare

    home = server.service.home
    train, _ = write_chart_data(home / "data" / "qa", n_train=6, n_val=1)
    records = read_records(train)[1]
    right = {r.id: r.answer for r in records}
    base = {r.id: "no idea" for r in records}
    tuned = dict(right) | {records[1].id: "wrong", records[4].id: "also wrong"}
    scripted_eval(home / "evals" / "qa-base", train, "charts", base)
    scripted_eval(home / "evals" / "qa-ft", train, "charts", tuned)
    compare(home / "evals" / "qa-base", home / "evals" / "qa-ft", home / "evals" / "qa-compare")
    kinds = {f["folder"]: f["kind"] for f in api.get("/evals").json()["folders"]}
    assert kinds[str(home / "evals" / "qa-compare")] == "compare" and kinds[str(home / "evals" / "qa-ft")] == "eval"
    page = api.get("/predictions", params={"folder": "evals/qa-compare", "show": "wrong"}).json()
    assert page["counts"] == {"all": 6, "wrong": 2, "fixed": 4, "broken": 0}
    assert [r["id"] for r in page["rows"]] == [records[1].id, records[4].id]
    assert page["rows"][0]["answers"]["fineTuned"] == {"prediction": "wrong", "correct": False, "score": 0.0, "outputTokens": 1}
    assert page["rows"][0]["answers"]["base"]["prediction"] == "no idea"
    image = api.get("/predictions/image", params={"folder": "evals/qa-compare", "id": records[1].id})
    first = records[1].images[0].source
    assert image.headers["content-type"] == "image/png" and image.content == (train.parent / first).read_bytes()
    assert api.get("/predictions/image", params={"folder": "evals/qa-compare", "id": "nope"}).status_code == 404
    assert api.get("/predictions", params={"folder": str(tmp_path)}).status_code == 404


def test_the_machine_page_says_why_there_is_no_gpu_and_shows_the_queue(api):
    m = api.get("/machine").json()
    if not m["gpus"]:
        assert "NVML" in m["noGpu"]
    assert m["host"]["cpus"] >= 1 and 0 < m["host"]["memoryUsed"] < m["host"]["memoryTotal"]
    assert m["queue"]["slots"] == 0 and m["queue"]["executor"] == "idle"


def test_browser_tests_fail_rather_than_skip_without_a_browser_unless_told(monkeypatch):
    import dashboard_fixtures

    monkeypatch.setattr(dashboard_fixtures, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv(dashboard_fixtures.SKIP_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception, match="no Chromium at /nonexistent/chromium"):
        with dashboard_fixtures.chromium():
            pass
    monkeypatch.setenv(dashboard_fixtures.SKIP_ENV, "1")
    with pytest.raises(pytest.skip.Exception):
        with dashboard_fixtures.chromium():
            pass


def test_gpus_are_read_through_nvml_where_a_driver_answers(monkeypatch):
    """No GPU here: a stand-in for NVML's library answers as a one-GPU machine's would, fields it lacks as None."""
    from types import SimpleNamespace

    from vlmtune.service.dashboard import machine

    class NVMLError(Exception):
        pass

    def no_power(handle):
        raise NVMLError("Not Supported")

    fake = SimpleNamespace(
        NVMLError=NVMLError, NVML_TEMPERATURE_GPU=0, nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: f"gpu{i}", nvmlDeviceGetName=lambda h: b"NVIDIA H200",
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=3 << 30, total=141 << 30),
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=87), nvmlDeviceGetTemperature=lambda h, kind: 61,
        nvmlDeviceGetPowerUsage=no_power, nvmlDeviceGetComputeRunningProcesses=lambda h: [1, 2])
    monkeypatch.setattr(machine, "pynvml", fake)
    monkeypatch.setitem(machine._nvml, "ready", None)
    assert machine.gpus() == ([{"index": 0, "name": "NVIDIA H200", "memoryUsed": 3 << 30, "memoryTotal": 141 << 30,
                                "utilization": 87, "temperature": 61, "powerWatts": None, "processes": 2}], None)


def test_cpu_use_is_measured_between_looks_from_any_thread():
    """Requests run on any thread of a pool; a per-thread sample (psutil's cpu_percent) would read 0 on each new one."""
    import threading
    import time

    from vlmtune.service.dashboard import machine

    machine.cpu_percent()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:  # keep one CPU busy between the two looks
        pass
    seen = []
    thread = threading.Thread(target=lambda: seen.append(machine.cpu_percent()))
    thread.start()
    thread.join()
    assert max(seen[0]) > 0


# ---------------------------------------------------------------------------------------- the playground
def test_the_playground_reaches_the_converse_route_past_its_host_check(api):
    """The playground calls Converse in process: the request must name a host the service accepts, so an unknown
    deployment is Converse's own not-found answer (not a 400 about the Host header)."""
    got = api.post("/playground", json={"modelId": "no-such-deployment", "question": "Which bar is tallest?"})
    assert got.status_code == 200
    answer = got.json()
    assert answer["status"] == 404 and "no-such-deployment" in answer["error"] and "Host" not in answer["error"]
