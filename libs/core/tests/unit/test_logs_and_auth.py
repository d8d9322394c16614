"""Logs carry ids and never personal data; tokens and settings fail with clear messages."""

from __future__ import annotations

import json

import pytest

from tailor_core.auth import TokenVerifier, mint_token
from tailor_core.errors import Unauthenticated
from tailor_core.logs import bind_event_id, bind_request_id, configure_logging
from tailor_core.settings import ServiceSettings, SettingsError, load_settings


def test_log_lines_are_json_with_ids_and_personal_values_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import structlog

    configure_logging("profile")
    with bind_request_id("req-1"), bind_event_id("evt-9"):
        structlog.get_logger().info(
            "profile updated",
            email="alice@example.com",
            change={"traits": {"first_name": "Alice"}, "fields": ["email"]},
            nested=[{"ip": "10.1.2.3", "count": 3}],
        )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    structlog.reset_defaults()
    assert line["service"] == "profile"
    assert line["request_id"] == "req-1"
    assert line["event_id"] == "evt-9"
    assert line["email"] == "[redacted]"
    assert line["change"] == {"traits": "[redacted]", "fields": ["email"]}
    assert line["nested"] == [{"ip": "[redacted]", "count": 3}]
    assert "alice" not in json.dumps(line).lower()


def test_token_round_trip_keeps_subject_kind_and_scopes() -> None:
    secret = "k" * 32
    principal = TokenVerifier(secret).verify(
        mint_token(secret, "compliance-officer-7", "compliance", ["privacy:admin", "audit:read"])
    )
    assert principal.kind == "compliance"
    assert principal.id == "compliance-officer-7"
    assert principal.scopes == {"privacy:admin", "audit:read"}


def test_tampered_token_is_refused() -> None:
    secret = "k" * 32
    token = mint_token(secret, "svc", "service", ["consent:check"])
    header, payload, signature = token.split(".")
    with pytest.raises(Unauthenticated):
        TokenVerifier(secret).verify(f"{header}.{payload}.{signature[:-2]}xx")


def test_short_secret_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        TokenVerifier("short")


def test_settings_errors_name_every_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAILOR_PG_DSN", raising=False)
    monkeypatch.setenv("TAILOR_TOKEN_SECRET", "too-short")
    monkeypatch.setenv("TAILOR_PARTITIONS", "0")
    with pytest.raises(SettingsError) as caught:
        load_settings("ingest", ServiceSettings)
    message = str(caught.value)
    assert "TAILOR_PG_DSN: is required but not set" in message
    assert "TAILOR_TOKEN_SECRET" in message
    assert "TAILOR_PARTITIONS" in message


def test_settings_defaults_follow_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAILOR_PG_DSN", "postgresql://u@127.0.0.1/db")
    monkeypatch.setenv("TAILOR_TOKEN_SECRET", "z" * 32)
    monkeypatch.delenv("TAILOR_GRPC_PORT", raising=False)
    monkeypatch.delenv("TAILOR_PG_SCHEMA", raising=False)
    settings = load_settings("segment", ServiceSettings)
    assert (settings.grpc_port, settings.metrics_port, settings.db_schema) == (
        50054,
        9104,
        "segment",
    )
    assert "postgresql" not in repr(settings)  # the DSN is a secret, never printed
