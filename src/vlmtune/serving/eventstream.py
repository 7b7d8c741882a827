"""The AWS event-stream framing (`application/vnd.amazon.eventstream`), which ConverseStream answers in.

botocore ships only the decoder (botocore/eventstream.py), so the encoder is here; it is the format's
whole definition. One message is:

    total length (uint32) | headers length (uint32) | CRC32 of those 8 bytes (uint32)
    headers: name length (uint8), name, value type (uint8, 7 = string), value length (uint16), value
    payload (here JSON)
    CRC32 of everything before it (uint32)

All integers are big-endian. Every event carries `:event-type`, `:content-type` and `:message-type`
("event", or "exception" with `:exception-type` instead of `:event-type`, which botocore raises).
"""

from __future__ import annotations

import json
import struct
import zlib

_STRING = 7


def _header(name: str, value: str) -> bytes:
    key, val = name.encode(), value.encode()
    return struct.pack(">B", len(key)) + key + struct.pack(">BH", _STRING, len(val)) + val


def message(headers: dict[str, str], payload: bytes) -> bytes:
    """One framed message."""
    head = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack(">II", 12 + len(head) + len(payload) + 4, len(head))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + head + payload
    return body + struct.pack(">I", zlib.crc32(body))


def event(event_type: str, payload: dict) -> bytes:
    """An event of the stream: messageStart, contentBlockDelta, contentBlockStop, messageStop, metadata."""
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return message(headers, json.dumps(payload).encode())


def exception(exception_type: str, text: str) -> bytes:
    """An error after the stream has started: boto3 raises it as an EventStreamError with this code."""
    headers = {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"}
    return message(headers, json.dumps({"message": text}).encode())
