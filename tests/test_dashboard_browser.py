"""The dashboard in a real browser (headless Chromium through Playwright), against a real service with real workers.

One scenario, in order, as a person would use it: sign in; create a job on tiny from the form and watch its
loss chart gain points while it trains; stop another job waiting in the queue; open the finished job's
report; compare it with a command-line run; browse an extraction compare's predictions and filter to the
wrong ones; deploy the job's model and ask it about an uploaded image in the playground. Each page is
screenshotted into docs/screenshots/ for the README.

Slow tier (`make test` runs it after the fast one; alone: `pytest -m slow tests/test_dashboard_browser.py`):
the module trains two real runs and waits for a job to finish, 3.5 to 4.5 minutes on a loaded 2-core machine
(the set-up 50 to 90 s, the live-chart test and the report test 50 to 85 s each, the others under 5 s).
"""

from __future__ import annotations

import copy
import json
import re

import pytest

from dashboard_fixtures import chromium, cli_run, fenced, screenshot, scripted_eval, truths, write_w2_data
from service_fixtures import API_KEY, bedrock, job_request, running_service, wait_for
from train_fixtures import write_chart_data

pytestmark = pytest.mark.slow  # one scenario: its tests run in order and together, never some of them
FINAL = ("Completed", "Failed", "Stopped")
state: dict = {}  # what one test leaves for the next: the scenario's job


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A home with data, a finished command-line run and a W-2 compare whose fine-tuned side is its model."""
    home = tmp_path_factory.mktemp("home")
    train, val = write_chart_data(home / "data" / "charts", n_train=48, n_val=8, seed=2)
    cli = cli_run(home, "cli-charts", train, val)
    w2 = write_w2_data(home / "data" / "w2", n=4)
    truth = truths(w2)
    ids = sorted(truth)
    tuned = {}
    for k, record_id in enumerate(ids):  # every other form gets one wrong amount
        answer = copy.deepcopy(truth[record_id])
        if k % 2:
            answer["earnings"]["wages"] = "999.99"
        tuned[record_id] = fenced(answer)
    scripted_eval(home / "evals" / "w2-base", w2, "w2", {i: fenced({"employee": truth[i]["employee"]}) for i in ids})
    scripted_eval(home / "evals" / "w2-ft", w2, "w2", tuned, model=str(cli / "model"))
    from vlmtune.reports.compare import compare

    compare(home / "evals" / "w2-base", home / "evals" / "w2-ft", home / "evals" / "w2-compare")
    return {"home": home, "train": train, "val": val, "cli": cli, "wrong": [i for k, i in enumerate(ids) if k % 2]}


@pytest.fixture(scope="module")
def server(world):
    with running_service(world["home"], max_jobs=1) as s:
        yield s


@pytest.fixture(scope="module")
def page(server):
    with chromium() as context:
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        yield page
    assert not page.errors, page.errors


def go(page, server, view: str) -> None:
    page.goto(f"{server.url}/#/{view}")
    page.wait_for_selector("nav.top a.active")


def loss_points_above(page, n: int, timeout: float) -> None:
    page.wait_for_function(f"Number(document.querySelector('[data-chart=loss]')?.dataset.points || 0) > {n}", timeout=timeout)


def points(page, chart: str) -> list[int]:
    value = page.get_attribute(f"[data-chart={chart}]", "data-series-points") or "0"
    return [int(v) for v in value.split(",")]


# ---------------------------------------------------------------------------------------- the scenario
def test_sign_in_with_the_api_key(page, server):
    page.goto(server.url + "/")
    page.wait_for_selector("#login:not([hidden])")
    screenshot(page, "login")
    page.fill("#login-key", "not-the-key")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error:has-text('not the service')")
    page.fill("#login-key", API_KEY)
    page.click("#login-form button[type=submit]")
    row = page.wait_for_selector("tr[data-ref='cli/runs/cli-charts']")
    assert "command line" in row.inner_text() and row.query_selector("[data-state=Completed]")


def test_a_job_from_the_form_shows_its_loss_chart_growing_while_it_trains(page, server, world):
    page.click("text=New job")
    page.fill("#f-jobName", "form-job")
    assert page.input_value("#f-customModelName") == "form-job-model"  # follows the job's name
    page.fill("#f-train", str(world["train"]))
    page.fill("#f-validation", str(world["val"]))
    page.fill("#f-epochCount", "500")
    assert "at most 100" in page.inner_text(".field:has(#f-epochCount) .error-text")
    assert page.is_disabled("button:has-text('Create job')")
    page.fill("#f-epochCount", "3")
    page.fill("#f-batchSize", "4")
    page.fill("#f-learningRateWarmupSteps", "0")
    page.click("summary:has-text('vlmtune options')")
    page.select_option("#f-method", "full")
    page.fill("#f-eval_every_steps", "12")
    page.fill("#f-log_every_steps", "1")
    assert page.is_enabled("button:has-text('Create job')")
    screenshot(page, "new-job")
    page.click("button:has-text('Create job')")
    page.wait_for_url(re.compile(r"#/run\?ref=job%2F"))
    state["ref"] = page.evaluate("new URLSearchParams(location.hash.split('?')[1]).get('ref')")
    page.evaluate("window.__sameDocument = true")
    loss_points_above(page, 0, 300_000)
    # A count taken while training (fewer points than steps), then more points, in the same document.
    total = int(wait_for(lambda: re.search(r"/ (\d+)", page.inner_text("[data-stat=progress] .value")), 60, what="total steps").group(1))
    seen = wait_for(lambda: (n := points(page, "loss")[0]) < total and n, 120, every=0.2, what="the chart between two steps")
    loss_points_above(page, seen, 120_000)
    assert page.evaluate("window.__sameDocument") is True  # it grew without a reload
    wait_for(lambda: points(page, "loss")[1] > 0, 120, what="a validation point")
    page.wait_for_selector("table.kv tr:has(td:text-is('batch_size')) td:text-is('4')")  # the resolved config, once written
    assert re.search(r"step \d+/\d+ .*loss", page.inner_text("[data-log]"))  # the log tail
    screenshot(page, "run-live", full_page=True)


def test_another_job_waits_in_the_queue_and_is_stopped_from_the_table(page, server, world):
    request = job_request("queued-job", str(world["train"]), str(world["home"] / "outputs"), str(world["val"]))
    bedrock(server.url).create_model_customization_job(**request)
    go(page, server, "machine")
    page.wait_for_selector("[data-table=queue] tr[data-job=queued-job]")
    assert "Running" in page.inner_text("[data-table=queue] tr[data-job=form-job]")
    assert page.query_selector("[data-host]") is not None
    screenshot(page, "machine")
    go(page, server, "jobs")
    row = "tr[data-name=queued-job]"
    page.wait_for_selector(f"{row} [data-state=Queued]")
    screenshot(page, "jobs")
    page.click(f"{row} [data-action=stop]")
    page.click(f"{row} [data-action=stop]")  # the second click confirms
    page.wait_for_selector(f"{row} [data-state=Stopped]")
    job = bedrock(server.url).get_model_customization_job(jobIdentifier="queued-job")
    assert job["status"] == "Stopped"


def test_the_finished_jobs_page_has_its_report(page, server):
    client = bedrock(server.url)
    job = wait_for(lambda: (j := client.get_model_customization_job(jobIdentifier="form-job"))["status"] in FINAL and j, 600,
                   every=2, what="form-job finishing")
    assert job["status"] == "Completed", job.get("failureMessage")
    go(page, server, f"run?ref={state['ref']}")
    report = page.wait_for_selector("[data-report]")
    outcome = json.loads((server.service.home / "jobs" / state["ref"].split("/")[1] / "run" / "run_complete.json").read_text())
    shown = page.inner_text("dl.facts dt:has-text('best validation loss') + dd")
    assert float(shown) == pytest.approx(outcome["best_validation_loss"], abs=1e-4)
    assert report.query_selector("img.curve") is not None and page.query_selector("text=form-job-model")
    assert page.query_selector("ul.files a:text-is('model/model.safetensors')")  # the artifacts
    screenshot(page, "run", full_page=True)


def test_compare_the_job_with_a_command_line_run(page, server):
    go(page, server, "jobs")
    page.check(f"tr[data-ref='{state['ref']}'] input[type=checkbox]")
    page.check("tr[data-ref='cli/runs/cli-charts'] input[type=checkbox]")
    page.click("text=Compare 2 selected")
    page.wait_for_selector("[data-table=config]")
    wait_for(lambda: min(points(page, "train")) > 0 and len(points(page, "train")) == 2, 30, what="two training curves")
    assert page.query_selector("[data-table=config] tr.diff[data-key=batch_size]")  # 4 against 8
    assert page.query_selector("[data-table=config] tr[data-key=model]") is None  # the same: hidden with the differences only
    categories = page.inner_text("[data-table=categories]")
    assert "Employer" in categories and "Earnings" in categories
    screenshot(page, "compare", full_page=True)


def test_the_predictions_browser_filters_to_the_wrong_answers(page, server, world):
    go(page, server, "predictions")
    page.click("[data-folder$='w2-compare']")
    page.wait_for_selector("article.example")
    assert page.inner_text("[data-filter=all] .count") == "4" and page.inner_text("[data-filter=wrong] .count") == "2"
    page.click("[data-filter=wrong]")
    page.wait_for_function("document.querySelectorAll('article.example').length === 2 && location.hash.includes('show=wrong')")
    ids = page.eval_on_selector_all("article.example", "els => els.map(e => e.dataset.id)")
    assert sorted(ids) == sorted(world["wrong"])
    for article in page.query_selector_all("article.example"):
        wrong = article.query_selector("tr[data-field=earnings_wages] td.verdict.fp")
        assert wrong is not None and wrong.inner_text() == "999.99"
        img = article.query_selector("img")
        assert img.evaluate("i => i.complete && i.naturalWidth") > 0
    screenshot(page, "predictions", full_page=True)


def test_deploy_the_model_and_ask_it_about_an_uploaded_image(page, server, world):
    go(page, server, "models")
    row = "tr[data-model=form-job-model]"
    page.click(f"{row} [data-action=deploy]")
    page.click(f"{row} [data-action=deploy-confirm]")
    page.wait_for_selector("tr[data-deployment=form-job-model-dep] [data-state=Active]", timeout=180_000)
    page.wait_for_selector("#pg-model option:has-text('form-job-model-dep')", state="attached")
    image = sorted((world["train"].parent / "images").iterdir())[0]
    page.set_input_files("#pg-image", str(image))
    page.wait_for_selector(".drop img")
    page.fill("#pg-question", "Which colour is the tallest bar?")
    page.click("#pg-ask")
    page.wait_for_selector("[data-answer]")
    input_tokens = int(page.inner_text("[data-usage=input] b").replace(",", ""))
    assert input_tokens > 64  # the tiny model spends 64 tokens on an image: the upload reached the model
    assert int(page.inner_text("[data-usage=output] b")) >= 1 and "ms" in page.inner_text("[data-usage=latency]")
    screenshot(page, "models")
    page.click("tr[data-deployment=form-job-model-dep] [data-action=undeploy]")
    page.wait_for_selector("tr[data-deployment=form-job-model-dep]", state="detached")
    assert bedrock(server.url).list_custom_model_deployments()["modelDeploymentSummaries"] == []
