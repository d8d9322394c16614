"""The contracts: generated code is fresh, every RPC declares a scope, enums start UNSPECIFIED."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor

import tailor
from tailor.common.v1 import options_pb2

ROOT = Path(__file__).resolve().parents[2]
EXPECTED_SERVICES = {
    "tailor.consent.v1.ConsentService",
    "tailor.consent.v1.KeyService",
    "tailor.consent.v1.AuditService",
    "tailor.privacy.v1.PrivacyService",
    "tailor.ingest.v1.IngestService",
    "tailor.ingest.v1.IngestAdminService",
    "tailor.profile.v1.ProfileService",
    "tailor.segment.v1.SegmentService",
    "tailor.recommend.v1.RecommendService",
}


def _generated_files() -> list[FileDescriptor]:
    files = []
    for module in pkgutil.walk_packages(tailor.__path__, "tailor."):
        if module.name.endswith("_pb2"):
            files.append(importlib.import_module(module.name).DESCRIPTOR)
    return files


def test_generated_code_is_fresh() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_every_service_is_there() -> None:
    names = {svc.full_name for f in _generated_files() for svc in f.services_by_name.values()}
    assert names == EXPECTED_SERVICES


def test_every_rpc_declares_the_scope_it_needs() -> None:
    undeclared = [
        method.full_name
        for f in _generated_files()
        for service in f.services_by_name.values()
        for method in service.methods
        if not method.GetOptions().Extensions[options_pb2.required_scope]
    ]
    assert undeclared == []


def test_every_enum_starts_with_an_unspecified_zero() -> None:
    wrong = []
    for f in _generated_files():
        enums = list(f.enum_types_by_name.values())
        for message in f.message_types_by_name.values():
            enums.extend(message.enum_types)
        for enum in enums:
            zero = enum.values_by_number[0].name
            if not zero.endswith("_UNSPECIFIED"):
                wrong.append(f"{enum.full_name}: {zero}")
    assert wrong == []


@pytest.mark.parametrize("service", sorted(EXPECTED_SERVICES))
def test_request_and_response_are_named_after_the_rpc(service: str) -> None:
    for method in descriptor_pool.Default().FindServiceByName(service).methods:
        assert method.input_type.name == f"{method.name}Request", method.full_name
