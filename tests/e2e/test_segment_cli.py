"""`tailor segment …` against real consent, ingest, profile and segment processes: preview,
create --wait with its size, listing and members, refused rules shown with a caret (exit 2),
other refusals (exit 1), audit and delete."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tailor_cli.testing import cli_data_dir, run_tailor
from tailor_core.testing.fixtures import unique_name
from tailor_core.testing.infra import Infra
from tailor_core.testing.platform import running_platform
from tailor_core.testing.waiting import wait_until
from tailor_segment.testing import SegmentPlatform, viewed

pytestmark = [pytest.mark.integration, pytest.mark.slow]


PRODUCT = "85123A"
RULE = f'event "Product Viewed" where product.product_id = "{PRODUCT}" count >= 1 within 24h'
# The window lacks its unit: the service points at column 76, the "24".
BAD_RULE = f'event "Product Viewed" where product.product_id = "{PRODUCT}" count >= 1 within 24'


class Platform(SegmentPlatform):
    """The services and the CLI's data directory."""

    data_dir: Path = Path()


@dataclass(frozen=True)
class People:
    fan: str  # viewed the product, consented to marketing: a member
    shy: str  # viewed it too, but consented to analytics only: excluded
    browser: str  # consented, viewed another product: no member


@pytest.fixture(scope="module")
async def platform(
    infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    async with running_platform(
        infra,
        tmp_path_factory.mktemp("segment-cli-logs"),
        ("consent", "ingest", "profile", "segment"),
        prefix="sgcli",
        kind=Platform,
    ) as running:
        assert isinstance(running, Platform)
        running.data_dir = cli_data_dir(tmp_path_factory.mktemp("tailor-data"))
        yield running


@pytest.fixture(autouse=True)
def credentials_from_the_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAILOR_TOKEN", raising=False)
    monkeypatch.delenv("TAILOR_SEGMENT_ADDR", raising=False)


async def tailor(platform: Platform, *args: str) -> tuple[int, str]:
    """Run ``tailor segment …`` in-process; (exit code, everything printed)."""
    address = platform.service("segment").address
    return await run_tailor(platform.data_dir, "segment", *args, "--segment-addr", address)


async def _json(platform: Platform, *args: str) -> Any:
    code, out = await tailor(platform, *args, "--json")
    assert code == 0, out
    return json.loads(out)


@pytest.fixture(scope="module")
async def people(platform: Platform) -> People:
    """Views sent through ingest, and seen by the segment service with each one's consent
    (a preview counts them) before any test runs."""
    found = People(unique_name("fan"), unique_name("shy"), unique_name("browser"))
    await platform.grant(found.fan, "analytics", "marketing")
    await platform.grant(found.browser, "analytics", "marketing")
    await platform.grant(found.shy, "analytics")
    await platform.send(
        viewed(found.fan, PRODUCT), viewed(found.shy, PRODUCT), viewed(found.browser, "22423")
    )

    async def seen() -> bool:
        preview = await _json(platform, "preview", "--rule", RULE)
        return bool(preview["size"] == 1 and preview["excluded_without_consent"] == 1)

    await wait_until(seen, timeout=60, message="the views and consents reached segment")
    return found


async def test_preview_counts_consented_matches_and_samples_them(
    platform: Platform, people: People
) -> None:
    preview = await _json(platform, "preview", "--rule", RULE, "--sample", "5")

    assert preview["sample_subject_ids"] == [people.fan]
    assert (preview["size"], preview["excluded_without_consent"]) == (1, 1)
    assert preview["population"] >= 2  # fan and browser consented to marketing
    assert preview["rule_text"] == RULE

    code, out = await tailor(platform, "preview", "--rule", RULE)
    assert code == 0, out
    assert "excluded without consent" in out


async def test_created_with_wait_it_is_active_listed_with_its_size_and_its_member(
    platform: Platform, people: People
) -> None:
    code, out = await tailor(
        platform, "create", "heart-viewers", "--rule", RULE, "--name", "Heart viewers", "--wait"
    )
    assert code == 0, out
    assert "active" in out
    assert "Heart viewers" in out

    listed = {s["segment_id"]: s for s in await _json(platform, "list")}
    assert listed["heart-viewers"]["state"] == "active"
    assert listed["heart-viewers"]["size"] == 1
    assert listed["heart-viewers"]["rule_text"] == RULE
    code, out = await tailor(platform, "list")
    assert code == 0
    assert "heart-viewers" in out

    members = await _json(platform, "members", "heart-viewers")
    assert [m["subject_id"] for m in members["members"]] == [people.fan]
    assert members["more"] is False
    code, out = await tailor(platform, "members", "heart-viewers")
    assert code == 0
    assert people.fan in out

    held = await _json(platform, "is-member", "heart-viewers", people.fan)
    assert held["member"] is True
    assert held["membership"]["segment_version"] == 1
    assert (await _json(platform, "is-member", "heart-viewers", people.shy))["member"] is False
    of = await _json(platform, "of", people.fan)
    assert [m["segment_id"] for m in of["memberships"]] == ["heart-viewers"]


async def test_validate_shows_the_canonical_text_or_the_caret_under_the_bad_column(
    platform: Platform, people: People
) -> None:
    code, out = await tailor(platform, "validate", "--rule", RULE)
    assert code == 0, out
    assert RULE in out

    code, out = await tailor(platform, "validate", "--rule", BAD_RULE)
    assert code == 2, out
    assert "Traceback" not in out
    lines = out.splitlines()
    position = next(i for i, line in enumerate(lines) if line.startswith("1:"))
    column = int(lines[position].split(":")[1])
    assert column == BAD_RULE.index("24") + 1
    assert "duration" in lines[position]
    assert lines[position + 1] == f"  {BAD_RULE}"
    assert lines[position + 2] == "  " + " " * (column - 1) + "^"

    checked = await _json_exit(platform, 2, "validate", "--rule", BAD_RULE)
    assert checked["valid"] is False
    assert [(p["line"], p["column"]) for p in checked["problems"]] == [(1, column)]


async def _json_exit(platform: Platform, expected_code: int, *args: str) -> Any:
    code, out = await tailor(platform, *args, "--json")
    assert code == expected_code, out
    return json.loads(out)


async def test_creating_from_a_refused_rule_exits_2_with_the_caret_read_from_the_file(
    platform: Platform, people: People, tmp_path: Path
) -> None:
    rule_file = tmp_path / "typo.rule"
    rule_file.write_text('trait computed.orders_lifetime >= 3 and\n  not in segmnt "vip"\n')

    code, out = await tailor(platform, "create", "typo", "--rule-file", str(rule_file))

    assert code == 2, out
    assert "INVALID_ARGUMENT" in out
    assert "Traceback" not in out
    lines = out.splitlines()
    position = next(i for i, line in enumerate(lines) if line.startswith(f"{rule_file}:2:"))
    assert lines[position + 1] == '    not in segmnt "vip"'
    assert lines[position + 2].index("^") == lines[position + 1].index("segmnt")
    refused = await _json_exit(platform, 2, "create", "typo", "--rule-file", str(rule_file))
    assert refused["error"] == "INVALID_ARGUMENT"
    assert refused["problems"][0]["line"] == 2


async def test_other_refusals_exit_1_through_the_error_printer(
    platform: Platform, people: People
) -> None:
    code, out = await tailor(platform, "get", "no-such-segment")
    assert code == 1
    assert "NOT_FOUND" in out
    assert "Traceback" not in out

    code, out = await tailor(platform, "create", "Bad Id", "--rule", RULE)
    assert code == 1, out
    assert "segment_id" in out


async def test_audit_reports_each_segment_and_delete_lets_its_members_exit(
    platform: Platform, people: People
) -> None:
    code, out = await tailor(platform, "create", "to-audit", "--rule", RULE, "--wait")
    assert code == 0, out

    audit = await _json(platform, "audit", "to-audit")
    audited = {s["segment_id"]: s for s in audit["segments"]}
    assert audited["to-audit"]["size"] == 1
    assert audited["to-audit"]["population"] >= 2
    assert "tiny_segment" in [w["kind"] for w in audit["warnings"]]  # one member, under 50
    code, out = await tailor(platform, "audit", "to-audit")
    assert code == 0, out
    assert "Warnings" in out

    deleted = await _json(platform, "delete", "to-audit")
    assert deleted == {"segment_id": "to-audit", "exited": 1}
    listed = await _json(platform, "list", "--include-deleted")
    assert {s["segment_id"]: s["state"] for s in listed}["to-audit"] == "deleted"
    assert "to-audit" not in [s["segment_id"] for s in await _json(platform, "list")]
