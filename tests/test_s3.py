"""s3:// images through boto3 against moto's server on loopback: read, validate, split, convert."""

import io
import json

import pytest
from PIL import Image

from vlmtune.data.formats.detect import read_records, write_records
from vlmtune.data.images import load_image
from vlmtune.data.record import qa_record
from vlmtune.data.split import split_records
from vlmtune.data.validate import validate_file
from vlmtune.errors import VlmtuneError


@pytest.fixture(scope="module")
def s3_server():
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_server, monkeypatch):
    import boto3

    from vlmtune.data import s3

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                        "VLMTUNE_S3_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(name, value)
    s3._client.cache_clear()
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="train")
    for i, colour in enumerate(["red", "blue", "red"]):
        buf = io.BytesIO()
        Image.new("RGB", (20, 10), colour).save(buf, format="PNG")
        client.put_object(Bucket="train", Key=f"images/{i}.png", Body=buf.getvalue())
    yield "train"
    s3._client.cache_clear()


def test_s3_images_load_validate_and_split(tmp_path, bucket):
    records = [qa_record(f"s3://{bucket}/images/{i}.png", "Colour?", answer) for i, answer in enumerate(["red", "blue", "RED"])]
    records.append(qa_record(f"s3://{bucket}/images/missing.png", "Colour?", "red"))
    write_records(tmp_path / "d.jsonl", records, "bedrock")
    assert load_image(records[0].images[0], tmp_path).getpixel((0, 0)) == (255, 0, 0)
    found = [(p.line, p.code) for p in validate_file(tmp_path / "d.jsonl")]
    # 0.png and 2.png have identical bytes but different answers; missing.png does not exist.
    assert found == [(3, "image-conflicting-answers"), (4, "image-missing")]
    splits = split_records(records[:3], tmp_path, (0.34, 0.33, 0.33), seed=1)
    where = {r.answer: name for name, rows in splits.items() for r in rows}
    assert where["red"] == where["RED"]


def test_missing_object_is_a_user_error(tmp_path, bucket):
    record = qa_record(f"s3://{bucket}/nope.png", "Q", "A", origin="d.jsonl:1")
    with pytest.raises(VlmtuneError, match=r"d.jsonl:1: s3://train/nope.png: expected a readable S3 object, found NoSuchKey"):
        load_image(record.images[0], tmp_path, record.origin)


def test_s3_uri_round_trips_in_every_image_format(tmp_path, bucket):
    for key in ("bedrock", "openai", "llava", "sharegpt"):
        write_records(tmp_path / f"{key}.jsonl", [qa_record(f"s3://{bucket}/images/1.png", "Q", "A")], key)
        assert read_records(tmp_path / f"{key}.jsonl")[1][0].images[0].source == f"s3://{bucket}/images/1.png"
        assert "s3://train/images/1.png" in json.dumps(json.loads((tmp_path / f"{key}.jsonl").read_text()))
