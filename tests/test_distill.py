"""`vlmtune distill` end to end on CPU, the teacher a real HTTP endpoint on loopback (tests/teacher_stub.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner

from serve_fixtures import API_KEY
from teacher_stub import COLOURS, running_stub, write_prompts
from vlmtune.cli import main
from vlmtune.data.formats.bedrock import read_bedrock
from vlmtune.distillation import DistillConfig, run_distillation
from vlmtune.errors import VlmtuneError
from vlmtune.serving.server import BackgroundServer
from vlmtune.training.metric_logging import TRAIN_CSV, read_csv

# Small and quick: the plumbing, not the learning (that is the slow test at the end).
QUICK = ["--epochs", "1", "--batch-size", "8", "--warmup-steps", "0", "--test-fraction", "0.25", "--val-fraction", "0.1",
         "--teacher-retries", "2", "--teacher-backoff", "0.01", "--teacher-timeout", "0.5", "--max-new-tokens", "4",
         "--task", "chartqa"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def stub():
    with running_stub() as stub:
        yield stub


def _distill(*args: str) -> str:
    result = CliRunner().invoke(main, ["distill", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_distill_records_teacher_failures_and_reruns_without_calls(tmp_path, stub):
    markers = {0: "[500]", 1: "[always-500]", 2: "[slow]", 3: "[malformed]", 4: "[always-malformed]"}
    prompts = write_prompts(tmp_path / "data", 24, seed=2, markers=markers)
    out = tmp_path / "out"
    args = ["--prompts", str(prompts), "--out", str(out), "--teacher-model", "stub", "--teacher-base-url", stub.url + "/v1", *QUICK]
    printed = _distill(*args)
    first = stub.total
    report = json.loads((out / "report.json").read_text())
    calls = report["teacher_calls"]
    assert (calls["questions"], calls["answered"], calls["failed"]) == (24, 22, 2)
    assert calls["calls"] == first == 24 + 3 + 2 * 2  # three transient failures retried once, two permanent ones thrice
    failures = [json.loads(line) for line in (out / "data" / "teacher_failures.jsonl").read_text().splitlines()]
    assert sorted(f["attempts"] for f in failures) == [3, 3] and {f["error"].split(":")[0] for f in failures} == {"HTTP 500", "malformed answer"}
    labelled = list(read_bedrock(out / "data" / "train.jsonl")) + list(read_bedrock(out / "data" / "validation.jsonl"))
    held = report["held_out"]
    # The prompts have no golden answers: the teacher's answers are the held-out references, so the prompts it
    # failed on are in no split's labelled set.
    assert len(labelled) + held["n"] == 22 and "teacher's answers" in held["reference"]
    assert all(r.answer in (*COLOURS, "yes", "no") and Path(r.images[0].source).is_file() for r in labelled)
    assert held["scores"]["teacher"]["exact_match"] == 1.0 and held["scores"]["base"]["exact_match"] == 0.0
    assert "teacher calls: 31 made, 0 cached, 2 failed" in printed and (out / "report.md").is_file()
    assert (out / "compare" / "comparison.md").is_file() and (out / "compare_base" / "comparison.md").is_file()
    trained = (out / "student" / "run_complete.json").stat().st_mtime_ns

    printed = _distill(*args)
    # Every answer came from the cache; only the two prompts that never got one are asked again, and fail again.
    assert stub.total - first == 2 * 3 and "teacher calls: 6 made, 22 cached, 2 failed" in printed
    assert (out / "student" / "run_complete.json").stat().st_mtime_ns == trained  # the same labelled set: the student is kept


def test_distill_reruns_with_zero_teacher_calls(tmp_path, stub, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unused")
    prompts = write_prompts(tmp_path / "data", 16, seed=3, answered=True, markers={0: "[500]", 5: "[429]"})
    args = ["--prompts", str(prompts), "--out", str(tmp_path / "out"), "--teacher-api", "converse", "--teacher-model", "stub",
            "--teacher-base-url", stub.url, "--golden-answers", "ignore", *QUICK]
    _distill(*args)
    assert stub.calls["converse"] == stub.total == 16 + 2
    printed = _distill(*args)
    assert stub.total == 18 and "teacher calls: 0 made, 16 cached, 0 failed" in printed


@pytest.mark.slow  # three distillations, about 20 s
def test_golden_answers_train_filter_or_ignore(tmp_path, stub):
    prompts = write_prompts(tmp_path / "data", 24, seed=4, answered=True)
    golden = {Path(r.images[0].source).name: r.answer for r in read_bedrock(prompts)}

    def run(mode: str) -> tuple[dict, list]:
        out = tmp_path / mode
        _distill("--prompts", str(prompts), "--out", str(out), "--teacher-model", "stub", "--teacher-base-url", stub.url + "/v1",
                 "--golden-answers", mode, *QUICK)
        labelled = list(read_bedrock(out / "data" / "train.jsonl")) + list(read_bedrock(out / "data" / "validation.jsonl"))
        return json.loads((out / "report.json").read_text()), labelled

    def disagree(labelled) -> int:
        return sum(r.answer != golden[Path(r.images[0].source).name] for r in labelled)

    before = stub.total
    report, labelled = run("train")
    # Every prompt has its answer: none goes to the teacher for training, only the held-out ones for the report.
    assert stub.total - before == report["held_out"]["n"] and report["data"]["answers_from"] == {"given answers": len(labelled)}
    assert report["held_out"]["reference"] == "the golden answers of the held-out prompts" and disagree(labelled) == 0
    trainable = len(labelled)
    report, labelled = run("ignore")
    # The teacher calls yellow green: exactly those of its answers disagree with the golden ones...
    wrong = disagree(labelled)
    assert wrong > 0 and report["data"]["answers_from"] == {"teacher answers": trainable} and report["data"]["filtered"] == {}
    report, labelled = run("filter")
    # ... and are the ones the filter leaves out.
    assert report["data"]["filtered"] == {"relaxed_accuracy below min_score 1 against the golden answer": wrong}
    assert len(labelled) == trainable - wrong and disagree(labelled) == 0


def test_yaml_config_in_the_services_names_with_samples_and_given_splits(tmp_path, stub):
    """What a service job hands over: the service's field names and string hyperparameters, its own validation set."""
    train = write_prompts(tmp_path / "train", 10, seed=8)
    val = write_prompts(tmp_path / "val", 3, seed=9)
    test = write_prompts(tmp_path / "test", 4, seed=10, answered=True)
    config = tmp_path / "distill.yaml"
    config.write_text(f"""
prompts: {train}
validation_data: {val}
test_data: {test}
out: {tmp_path / "out"}
teacherModelIdentifier: stub
teacher_base_url: {stub.url}/v1
maxResponseLengthForInference: 16
samples_per_prompt: 2
teacher_temperature: 0.5
epochCount: "1"
batchSize: "8"
learningRate: "0.002"
task: chartqa
""")
    _distill(str(config))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    # Two samples of every training and validation prompt, one of every held-out prompt; the stub's samples agree,
    # so each prompt trains once.
    assert stub.total == report["teacher_calls"]["calls"] == 2 * (10 + 3) + 4
    assert report["data"]["splits"] == {"train": 10, "validation": 3, "test": 4} and report["data"]["labelled"] == {"train": 10, "validation": 3}
    assert report["held_out"]["reference"] == "the golden answers of the held-out prompts"
    assert report["student"]["steps"] == 2


@pytest.mark.slow  # two distillations, about 40 s
def test_a_stopped_distillation_resumes_its_student_without_asking_again(tmp_path, stub, capfd):
    """What a service job's Stop (or the service's restart) does: the student checkpoints and the call returns None;
    the same call later resumes the student from that checkpoint, every answer from the cache."""
    cfg = DistillConfig(prompts=write_prompts(tmp_path / "data", 24, seed=2), out=tmp_path / "out", teacher_model="stub",
                        teacher_base_url=stub.url + "/v1", epochs=2, batch_size=8, warmup_steps=0, test_fraction=0.25,
                        max_new_tokens=4, save_every_steps=1)
    asked = []
    assert run_distillation(cfg, should_stop=lambda: asked.append(1) or True) is None
    calls = stub.total
    student = tmp_path / "out" / "student"
    assert asked == [1] and not (student / "run_complete.json").exists() and list((student / "checkpoints").iterdir())
    capfd.readouterr()
    result = run_distillation(cfg)
    assert stub.total == calls and result.report["teacher_calls"]["calls"] == 0  # nothing paid for twice
    assert "resuming from" in "".join(capfd.readouterr())  # from the checkpoint, not started over
    assert result.report["student"]["steps"] == 4 and result.weights.is_dir()
    assert [r["step_number"] for r in read_csv(student / TRAIN_CSV)] == [1, 2, 3, 4]


def test_answer_schema_filter(tmp_path, stub):
    schema = tmp_path / "colour.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}))
    prompts = write_prompts(tmp_path / "data", 12, seed=6)
    with pytest.raises(VlmtuneError, match="every answer was filtered out: .* not valid against answer_schema"):
        run_distillation(DistillConfig(prompts=prompts, out=tmp_path / "out", teacher_model="stub", teacher_base_url=stub.url + "/v1",
                                       answer_schema=schema, epochs=1, test_fraction=0.25))


def test_distill_from_invocation_logs(tmp_path):
    """Option 2: calls logged by `vlmtune serve`, chosen by their requestMetadata, trained on as logged."""
    from vlmtune.models.tiny import build_tiny
    from vlmtune.serving import ServeConfig
    from vlmtune.serving.app import create_app
    from vlmtune.serving.engine import Engine

    prompts = list(read_bedrock(write_prompts(tmp_path / "data", 14, seed=7)))
    model, processor = build_tiny(seed=0)
    cfg = ServeConfig(model="tiny", api_key=API_KEY, max_tokens=8, invocation_log=tmp_path / "logs" / "calls.jsonl")
    with BackgroundServer(create_app(cfg, Engine(model, processor, "tiny"))) as server:
        bedrock = boto3.client("bedrock-runtime", endpoint_url=server.url, region_name="us-east-1",
                               aws_access_key_id=API_KEY, aws_secret_access_key="unused")
        for i, r in enumerate(prompts):
            image = (tmp_path / "data" / r.images[0].source).read_bytes()
            content = [{"image": {"format": "png", "source": {"bytes": image}}}, {"text": r.messages[0].text}]
            bedrock.converse(modelId="tiny", messages=[{"role": "user", "content": content}], inferenceConfig={"maxTokens": 3},
                             requestMetadata={"project": "colours" if i < 12 else "other", "user": "test" if i == 0 else "alice"})
    filters = json.dumps({"andAll": [{"equals": {"project": "colours"}}, {"notEquals": {"user": "test"}}]})
    out = tmp_path / "out"
    printed = _distill("--invocation-logs", str(tmp_path / "logs"), "--use-prompt-response", "--request-metadata-filters", filters,
                       "--out", str(out), *QUICK)
    report = json.loads((out / "report.json").read_text())
    assert "teacher calls: 0 made" in printed and report["data"]["skipped"] == {"left out by requestMetadataFilters": 3}
    labelled = list(read_bedrock(out / "data" / "train.jsonl")) + list(read_bedrock(out / "data" / "validation.jsonl"))
    assert len(labelled) + report["held_out"]["n"] == 11
    line = json.loads((out / "data" / "train.jsonl").read_text().splitlines()[0])
    inline = line["messages"][0]["content"][0]["image"]["source"]["bytes"]  # the logged image, kept inline
    assert base64.b64decode(inline).startswith(b"\x89PNG")
    assert report["held_out"]["scores"]["teacher"]["exact_match"] == 1.0 and "logged answers" in report["held_out"]["reference"]


@pytest.mark.parametrize("args, message", [
    ([], "expected exactly one (data option 1 or 2), found neither"),
    (["--prompts", "p.jsonl", "--invocation-logs", "logs"], "found both"),
    (["--prompts", "p.jsonl"], "'teacher_model' (teacherModelIdentifier): required"),
    (["--prompts", "p.jsonl", "--teacher-model", "m", "--samples-per-prompt", "3"], "expected teacher_temperature > 0"),
    (["--invocation-logs", "logs", "--use-prompt-response", "--request-metadata-filters", "{bad"], "expected JSON"),
    (["--invocation-logs", "logs", "--use-prompt-response", "--request-metadata-filters", '{"equals": {}}'], "at least 1 item"),
    (["--prompts", "p.jsonl", "--teacher-model", "m", "--use-prompt-response"], "expected only with invocation_logs"),
])
def test_bad_options_are_one_line_errors(args, message):
    result = CliRunner().invoke(main, ["distill", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_an_existing_folder_that_is_not_a_distillation_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(VlmtuneError, match="is not a vlmtune distill folder"):
        run_distillation(DistillConfig(prompts=tmp_path / "p.jsonl", out=tmp_path / "mine", teacher_model="m"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_the_student_learns_the_teacher(tmp_path, stub, monkeypatch):
    """Measured, not assumed: on held-out prompts scored against the true answers, the student rises from the
    random base to near the teacher (which calls yellow green, so the teacher is ~88%, not 100%)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unused")
    prompts = write_prompts(tmp_path / "data", 240, seed=11, answered=True)
    out = tmp_path / "out"
    _distill("--prompts", str(prompts), "--out", str(out), "--teacher-api", "converse", "--teacher-model", "stub",
             "--teacher-base-url", stub.url, "--golden-answers", "ignore", "--epochs", "5", "--batch-size", "8",
             "--learning-rate", "3e-3", "--warmup-steps", "10", "--test-fraction", "0.25", "--task", "chartqa")
    held = json.loads((out / "report.json").read_text())["held_out"]
    base, student, teacher = (held["scores"][k]["exact_match"] for k in ("base", "student", "teacher"))
    print(f"held-out exact match (n={held['n']}): base {base:.3f}, student {student:.3f}, teacher {teacher:.3f}")
    assert held["reference"] == "the golden answers of the held-out prompts"
    assert base == 0.0 and 0.75 < teacher < 1.0  # the teacher's known mistake costs it the yellow colour questions
    # Near the teacher: within 10 points (one in ten held-out prompts), having started at zero.
    assert student >= teacher - 0.10
