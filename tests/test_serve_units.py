"""Serving pieces without a server: image safety, auth parsing, config, batching order, stream chunks."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from PIL import Image, ImageFile

from serve_fixtures import png_header_only
from vlmtune.config import load_config
from vlmtune.data.record import Message, Record, TextPart
from vlmtune.errors import VlmtuneError
from vlmtune.models.generate import Generation, Sampling
from vlmtune.serving import BadRequest, ServeConfig
from vlmtune.serving.auth import check_key, sigv4_access_key
from vlmtune.serving.engine import Engine, Job
from vlmtune.serving.images import ImageLimits, decode_base64, decode_image, image_from_url
from vlmtune.serving.openai_api import stream_chunks

LIMITS = ImageLimits(max_bytes=100_000, max_pixels=512 * 512, max_images=2)


def png(width=16, height=16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "blue").save(buf, format="PNG")
    return buf.getvalue()


def test_bomb_is_refused_before_any_pixel_is_decoded(monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for side in (1000, 50_000):  # ours, then past Pillow's own bomb limit
        with pytest.raises(BadRequest, match="pixels") as e:
            decode_image(png_header_only(side, side), LIMITS, "img")
        assert e.value.status == 413


def test_decode_image_gives_rgb_and_refuses_other_formats():
    assert decode_image(png(20, 10), LIMITS, "img").size == (20, 10)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="BMP")
    with pytest.raises(BadRequest, match="found BMP"):
        decode_image(buf.getvalue(), LIMITS, "img")


def test_overlong_base64_is_refused_without_decoding():
    with pytest.raises(BadRequest, match="over the limit"):
        decode_base64("A" * 200_000, LIMITS, "img")


def test_local_images_stay_inside_the_allowed_folder(tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside.png"
    allowed.mkdir()
    (allowed / "a.png").write_bytes(png())
    outside.write_bytes(png())
    (allowed / "link.png").symlink_to(outside)
    limits = ImageLimits(allow_dir=allowed)
    assert image_from_url("a.png", limits, "img").size == (16, 16)
    assert image_from_url(f"file://{allowed / 'a.png'}", limits, "img").size == (16, 16)
    for escape in ("../outside.png", str(outside), "link.png", f"file://{outside}", "a.png\0"):
        with pytest.raises(BadRequest, match="not found under the allowed folder"):
            image_from_url(escape, limits, "img")
    with pytest.raises(BadRequest, match="--allow-local-images"):
        image_from_url("a.png", ImageLimits(), "img")
    with pytest.raises(BadRequest, match="never fetched"):
        image_from_url("ftp://host/a.png", limits, "img")


def test_auth_accepts_bearer_or_sigv4_access_key():
    sig = "AWS4-HMAC-SHA256 Credential=KEY123/20250101/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=ab"
    assert sigv4_access_key(sig) == "KEY123"
    check_key("Bearer KEY123", "KEY123", allow_sigv4=False)
    check_key(sig, "KEY123", allow_sigv4=True)
    check_key(None, None, allow_sigv4=False)  # no key configured: open
    with pytest.raises(BadRequest, match="missing API key"):
        check_key(sig, "KEY123", allow_sigv4=False)  # OpenAI routes take Bearer only
    with pytest.raises(BadRequest, match="invalid API key") as e:
        check_key("Bearer nope", "KEY123", allow_sigv4=True)
    assert e.value.status == 401


def test_serve_config_parses_adapters_and_explains_mistakes():
    cfg = load_config(ServeConfig, None, {"adapters": ["w2=/runs/w2/adapter", "charts=out/a"], "port": "9000"})
    assert cfg.adapters == {"w2": Path("/runs/w2/adapter"), "charts": Path("out/a")} and cfg.port == 9000
    with pytest.raises(VlmtuneError, match="NAME=PATH"):
        load_config(ServeConfig, None, {"adapters": ["no-equals-sign"]})


def test_cli_serve_reports_bad_options_without_traceback():
    from vlmtune.cli.main import main

    result = CliRunner().invoke(main, ["serve", "--port", "http"])
    assert result.exit_code == 2 and "port" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["serve", "--adapter", "oops"])
    assert result.exit_code == 2 and "expected NAME=PATH, found 'oops'" in result.output


class RecordingEngine(Engine):
    def __init__(self, **kwargs):
        super().__init__(None, SimpleNamespace(image_token="<image>"), "base", ["lora"], **kwargs)
        self.batches: list[list[str]] = []

    def _generate(self, batch):
        self.batches.append([j.record.id for j in batch])
        return [Generation(j.record.id, 1, 1) for j in batch]


def job(name: str, model: str = "base", temperature: float = 0.0) -> Job:
    record = Record((Message("user", (TextPart("hi"),)),), id=name)
    return Job(record, [], model, Sampling(4, temperature))


def test_engine_batches_compatible_jobs_oldest_first():
    engine = RecordingEngine(max_batch=2, batch_wait_s=0)
    jobs = [job("a"), job("b", "lora"), job("c"), job("d", temperature=0.5), job("e"), job("f", "lora")]
    futures = [engine.submit(j) for j in jobs]  # queued before the worker starts, so all wait together
    engine.start()
    try:
        assert [f.result(timeout=5).text for f in futures] == list("abcdef")
    finally:
        engine.stop()
    assert engine.batches == [["a", "c"], ["b", "f"], ["d"], ["e"]]


def test_engine_refuses_unknown_model_and_full_queue():
    engine = RecordingEngine(max_queue=1)
    with pytest.raises(BadRequest, match="not found") as e:
        engine.submit(job("x", "gpt"))
    assert e.value.status == 404
    engine.submit(job("a"))
    with pytest.raises(BadRequest, match="busy") as e:
        engine.submit(job("b"))
    assert e.value.status == 429


def test_stream_chunks_reassemble_the_text():
    gen = Generation("The tallest bar is red.", 10, 6, "end_turn")
    chunks = stream_chunks("id", "tiny", gen, include_usage=True)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == gen.text
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 16
    assert time.time() - chunks[0]["created"] < 5


def test_generation_stops_at_the_request_deadline(tiny):
    """A request whose client has given up must not keep the model busy for its whole max_tokens."""
    import time

    from PIL import Image

    from vlmtune.data.record import qa_record
    from vlmtune.models.generate import Sampling, generate_batch

    model, processor = tiny
    record = qa_record("x.png", "How many bars are there?", "")
    sampling = Sampling(max_new_tokens=400)
    started = time.monotonic()
    gen = generate_batch(model, processor, [record], [[Image.new("RGB", (64, 64))]], sampling=sampling, deadline=started + 0.3)[0]
    assert gen.finish_reason == "max_tokens" and gen.output_tokens < 400
    assert time.monotonic() - started < 3.0


def test_batch_waits_its_window_for_requests_that_arrive_inside_it():
    """Before: the wait ended at the first new request, so three requests 50 ms apart made two batches."""
    engine = RecordingEngine(max_batch=8, batch_wait_s=2.0)
    engine.start()
    try:
        futures = []
        for name in "abc":
            futures.append(engine.submit(job(name)))
            time.sleep(0.05)
        assert [f.result(timeout=10).text for f in futures] == list("abc")
    finally:
        engine.stop()
    assert engine.batches == [["a", "b", "c"]]


def test_a_full_batch_does_not_wait_out_the_window():
    engine = RecordingEngine(max_batch=2, batch_wait_s=60.0)
    engine.start()
    try:
        started = time.monotonic()
        futures = [engine.submit(job(name)) for name in "ab"]
        assert [f.result(timeout=20).text for f in futures] == ["a", "b"]
        assert time.monotonic() - started < 20  # far less than the 60 s window
    finally:
        engine.stop()


def test_request_pixels_are_capped_before_the_image_over_the_cap_is_decoded(monkeypatch):
    from vlmtune.serving.openai_api import ChatMessage, to_record

    decoded = set()  # the images whose pixels were decoded (load runs more than once per image)
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.add(id(self)) or load(self))
    limits = ImageLimits(max_request_pixels=2 * 16 * 16 + 10)
    uri = "data:image/png;base64," + base64.b64encode(png()).decode()
    parts = [{"type": "image_url", "image_url": {"url": uri}}] * 3 + [{"type": "text", "text": "Describe."}]
    with pytest.raises(BadRequest, match=r"content\.2.*more than 522 pixels in all \(max_request_pixels\)") as e:
        to_record([ChatMessage.model_validate({"role": "user", "content": parts})], limits)
    assert e.value.status == 413 and len(decoded) == 2
    record, images = to_record([ChatMessage.model_validate({"role": "user", "content": parts[1:]})], limits)
    assert len(images) == 2


def test_engine_encode_refuses_long_prompts_and_stops_at_the_deadline(tiny):
    model, processor = tiny
    engine = Engine(model, processor, "tiny", max_prompt_tokens=10)
    long = Job(Record((Message("user", (TextPart("red green blue " * 10),)),)), [], "tiny", Sampling(4))
    with pytest.raises(BadRequest, match=r"prompt is \d+ tokens; the limit is 10 \(max_prompt_tokens\)"):
        engine.encode(long)
    late = Job(Record((Message("user", (TextPart("hi"),)),)), [], "tiny", Sampling(4), deadline=time.monotonic() - 1)
    with pytest.raises(BadRequest, match="timed out") as e:
        Engine(model, processor, "tiny").encode(late)
    assert e.value.status == 408
    # Never more than the model's own context, whatever the configured limit.
    assert Engine(model, processor, "tiny", max_prompt_tokens=10**9).max_prompt_tokens == model.config.text_config.max_position_embeddings


def test_allowed_hosts_are_the_bind_address_localhost_and_what_the_user_adds():
    import socket

    from vlmtune.serving.guard import AllowedHosts

    local = AllowedHosts("127.0.0.1", ["my.box"])
    for host in ("127.0.0.1:8000", "localhost", "LOCALHOST.:80", "[::1]:8000", "::1", "my.box:9", None):
        assert local.accepts(host), host
    for host in ("evil.example", "127.0.0.1.nip.io", "192.168.1.5", "localhost.evil.example:8000"):
        assert not local.accepts(host), host
    assert AllowedHosts("127.0.0.1", ["*"]).accepts("anything.example")
    everywhere = AllowedHosts("0.0.0.0", [])
    for host in ("192.168.1.5:8000", "[fe80::1]:80", socket.gethostname(), "localhost"):
        assert everywhere.accepts(host), host
    assert not everywhere.accepts("rebind.evil.example")


def test_event_stream_frames_parse_with_botocore():
    from botocore.eventstream import EventStreamBuffer

    from vlmtune.serving import eventstream

    buf = EventStreamBuffer()
    buf.add_data(eventstream.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "héllo"}})
                 + eventstream.exception("validationException", "bad"))
    first, second = list(buf)
    assert first.headers == {":event-type": "contentBlockDelta", ":content-type": "application/json", ":message-type": "event"}
    assert json.loads(first.payload) == {"contentBlockIndex": 0, "delta": {"text": "héllo"}}
    assert second.headers[":message-type"] == "exception" and second.headers[":exception-type"] == "validationException"
    assert second.to_response_dict()["status_code"] == 400


def test_switching_adapters_keeps_a_served_model_frozen(tmp_path):
    """peft's set_adapter makes the adapter trainable unless told otherwise, which would take generation off
    torch.inference_mode for every request after the first to name an adapter."""
    from serve_fixtures import ADAPTER, save_tiny_adapter
    from vlmtune.models.generate import for_inference
    from vlmtune.models.loading import attach_adapters
    from vlmtune.models.tiny import build_tiny

    model, processor = build_tiny(0)
    engine = Engine(for_inference(attach_adapters(model, {ADAPTER: save_tiny_adapter(model, tmp_path)})), processor, "tiny", [ADAPTER])
    for model_id in (ADAPTER, "tiny", ADAPTER):
        with engine._adapter(model_id):
            assert not any(p.requires_grad for p in engine.model.parameters()), model_id
