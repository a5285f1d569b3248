"""Redaction of secrets in log events, and the ZIP tail check."""

from __future__ import annotations

import io
import json
import zipfile

import structlog

from exporter.logs import (
    REDACTED,
    configure_logging,
    forget_secret,
    redact,
    redact_text,
    register_secret,
    render_json,
)
from exporter.zipcheck import check_zip_tail


def test_sensitive_keys_and_signatures_are_masked() -> None:
    """Authorization headers, tokens and SK-named fields are masked; ordinary fields are kept."""
    event = redact(
        None,
        "info",
        {
            "event": "x",
            "headers": {
                "Authorization": "SDK-HMAC-SHA256 Access=AK, SignedHeaders=a;b, Signature=abc123",
                "X-Security-Token": "tok",
                "Content-Type": "application/json",
            },
            "sk": "s3cr3t",
            "note": "called with X-Auth-Token: abcdef and password=hunter2",
            "url": "redis://user:pw@host:6379/0",
            "chunk": 3,
        },
    )
    dumped = json.dumps(event)
    for secret in ("abc123", 'tok"', "s3cr3t", "abcdef", "hunter2", ":pw@"):
        assert secret not in dumped
    assert event["chunk"] == 3 and event["headers"]["Content-Type"] == "application/json"


def test_registered_secret_masked_inside_any_text() -> None:
    """A configured secret is masked even when it appears inside an exception message."""
    stream = io.StringIO()
    configure_logging("json", "debug", stream=stream, secrets=["VERYSECRET-SK-VALUE"])
    structlog.get_logger().error("boom", error=ValueError("bad VERYSECRET-SK-VALUE here"))
    line = stream.getvalue()
    assert "VERYSECRET-SK-VALUE" not in line and REDACTED in line


def test_credential_services_headers_and_fields_are_masked() -> None:
    """What the metadata service and IAM exchange: X-Subject-Token, X-Metadata-Token and the
    `securitytoken` / `secret` of a security key, as fields, as headers and inside raw text."""
    event = redact(
        None,
        "debug",
        {
            "event": "x",
            "headers": {"X-Subject-Token": "MIIsubject", "X-Metadata-Token": "metasession"},
            "securitytoken": "sectok-field",
            "body": '{"credential": {"secret": "sk-in-json", "securitytoken": "tok-in-json"}}',
            "raw": "X-Subject-Token: MIIraw\r\nX-Metadata-Token: metaraw",
        },
    )
    dumped = json.dumps(event)
    for secret in (
        "MIIsubject",
        "metasession",
        "sectok-field",
        "sk-in-json",
        "tok-in-json",
        "MIIraw",
        "metaraw",
    ):
        assert secret not in dumped, secret


def test_a_forgotten_secret_is_no_longer_searched_for() -> None:
    """forget_secret drops a rotated-out value from the redactor's list (key names still mask it)."""
    register_secret("ROTATED-OUT-VALUE-0001")
    assert redact_text("x ROTATED-OUT-VALUE-0001 y") == f"x {REDACTED} y"
    forget_secret("ROTATED-OUT-VALUE-0001")
    assert redact_text("z ROTATED-OUT-VALUE-0001 z") == "z ROTATED-OUT-VALUE-0001 z"
    assert redact(None, "info", {"sk": "ROTATED-OUT-VALUE-0001"})["sk"] == REDACTED


def _zip_bytes(entries: int, comment: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n in range(entries):
            archive.writestr(f"job_{n}.json", "{}")
        archive.comment = comment
    return buffer.getvalue()


def test_zip_tail_check() -> None:
    """Real ZIPs pass (with or without comment); empty, truncated and non-ZIP data fail with a reason."""
    assert check_zip_tail(_zip_bytes(3)).entries == 3
    assert check_zip_tail(_zip_bytes(1, b"PK\x05\x06 tricky comment")).ok
    assert check_zip_tail(_zip_bytes(0)).reason == "the ZIP has no entries"
    assert not check_zip_tail(_zip_bytes(2)[:-5]).ok
    assert not check_zip_tail(b"<html>not a zip</html>").ok


def test_json_lines_take_values_orjson_refuses() -> None:
    """A number beyond 64 bits still renders (through the stdlib) instead of failing the log call."""
    line = render_json({"event": "x", "big": 2**70, "text": "é"})
    assert json.loads(line) == {"event": "x", "big": 2**70, "text": "é"}


def test_a_secret_registered_later_is_masked_in_text_seen_before() -> None:
    """The cache of already-checked short values cannot hand back a value that now holds a secret."""
    text = "connecting with key LATE-SECRET-0042"
    assert redact_text(text) == text
    register_secret("LATE-SECRET-0042")
    assert redact_text(text) == f"connecting with key {REDACTED}"
