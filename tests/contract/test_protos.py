"""The v1 contracts: generated code is fresh, field numbers hold, and every RPC, enum and field
follows the conventions other services rely on (scopes, naming, comments, error semantics)."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor
from google.protobuf.message import Message

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

# Responses not named <Rpc>Response. They were served before the rule was written down, are
# used by the consent service and its clients, and are documented in their files; this list
# may only shrink.
RESPONSE_NAME_EXCEPTIONS = {
    "tailor.consent.v1.ConsentService.GrantConsent": "RecordConsentResponse",
    "tailor.consent.v1.ConsentService.DenyConsent": "RecordConsentResponse",
    "tailor.consent.v1.ConsentService.WithdrawConsent": "RecordConsentResponse",
    "tailor.consent.v1.ConsentService.UpsertPurpose": "Purpose",
    "tailor.consent.v1.KeyService.GetEncryptionKey": "DataKey",
    "tailor.consent.v1.KeyService.GetDecryptionKey": "DataKey",
    "tailor.privacy.v1.PrivacyService.RequestExport": "PrivacyRequest",
    "tailor.privacy.v1.PrivacyService.RequestErasure": "PrivacyRequest",
    "tailor.privacy.v1.PrivacyService.GetPrivacyRequest": "PrivacyRequest",
}

STATUS_CODES = (
    "CANCELLED|UNKNOWN|INVALID_ARGUMENT|DEADLINE_EXCEEDED|NOT_FOUND|ALREADY_EXISTS|"
    "PERMISSION_DENIED|RESOURCE_EXHAUSTED|FAILED_PRECONDITION|ABORTED|OUT_OF_RANGE|"
    "UNIMPLEMENTED|INTERNAL|UNAVAILABLE|DATA_LOSS|UNAUTHENTICATED"
)
# An RPC comment names the status codes of its failures, refers to a sibling's ("as for
# Track"), or says it has none of its own.
ERROR_SEMANTICS = re.compile(rf"\b({STATUS_CODES})\b|[Nn]o errors of its own|\bas for \w+")

# SourceCodeInfo paths: FileDescriptorProto and friends' field numbers in descriptor.proto.
FILE_SYNTAX, FILE_MESSAGE, FILE_ENUM, FILE_SERVICE = 12, 4, 5, 6
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM = 2, 3, 4
ENUM_VALUE, SERVICE_METHOD = 2, 2


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "tools" / "gen_protos.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _module_names() -> list[str]:
    """Every generated module, from the .proto files themselves."""
    names = []
    for proto in gen.proto_files():
        stem = proto.removesuffix(".proto").replace("/", ".")
        names += [f"{stem}_pb2", f"{stem}_pb2_grpc"]
    return names


def _files() -> list[FileDescriptor]:
    return [
        importlib.import_module(name).DESCRIPTOR
        for name in _module_names()
        if name.endswith("_pb2")
    ]


def _enums(file: FileDescriptor) -> Iterator[EnumDescriptor]:
    def nested(message: Descriptor) -> Iterator[EnumDescriptor]:
        yield from message.enum_types
        for inner in message.nested_types:
            yield from nested(inner)

    yield from file.enum_types_by_name.values()
    for message in file.message_types_by_name.values():
        yield from nested(message)


@pytest.fixture(scope="module")
def source() -> descriptor_pb2.FileDescriptorSet:
    """The contracts with their comments, straight from protos/."""
    files: descriptor_pb2.FileDescriptorSet = gen.descriptor_set()
    return files


def test_generated_code_scopes_doc_and_wire_lock_are_fresh() -> None:
    assert gen.check() == [], "run `make gen` (tools/gen_protos.py) and commit the result"


@pytest.mark.parametrize("module", _module_names())
def test_every_generated_module_imports_cleanly(module: str) -> None:
    imported = importlib.import_module(module)
    if module.endswith("_pb2_grpc"):
        services = importlib.import_module(module.removesuffix("_grpc")).DESCRIPTOR
        for name in services.services_by_name:
            assert hasattr(imported, f"{name}Stub")
            assert hasattr(imported, f"{name}Servicer")
            assert hasattr(imported, f"add_{name}Servicer_to_server")


def test_every_service_is_there() -> None:
    names = {svc.full_name for f in _files() for svc in f.services_by_name.values()}
    assert names == EXPECTED_SERVICES


def test_every_rpc_declares_a_scope_from_the_vocabulary() -> None:
    _files()  # every contract is in the default pool
    pool = descriptor_pool.Default()
    vocabulary = {
        value.GetOptions().Extensions[options_pb2.scope_name]
        for value in options_pb2.Scope.DESCRIPTOR.values
        if value.number != 0
    }
    assert "" not in vocabulary
    undeclared, unknown = [], []
    for name in sorted(EXPECTED_SERVICES):
        for method in pool.FindServiceByName(name).methods:
            scope = method.GetOptions().Extensions[options_pb2.required_scope]
            if not scope:
                undeclared.append(method.full_name)
            elif scope not in vocabulary:
                unknown.append(f"{method.full_name}: {scope}")
    assert undeclared == []
    assert unknown == []


def test_every_enum_starts_with_an_unspecified_zero() -> None:
    wrong = []
    for file in _files():
        for enum in _enums(file):
            zero = enum.values_by_number[0].name
            if zero != f"{_upper_snake(enum.name)}_UNSPECIFIED":
                wrong.append(f"{enum.full_name}: {zero}")
    assert wrong == []


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def test_requests_and_responses_are_named_after_the_rpc() -> None:
    pool = descriptor_pool.Default()
    _files()
    wrong = []
    for name in sorted(EXPECTED_SERVICES):
        for method in pool.FindServiceByName(name).methods:
            response = RESPONSE_NAME_EXCEPTIONS.get(method.full_name, f"{method.name}Response")
            if method.input_type.name != f"{method.name}Request":
                wrong.append(f"{method.full_name} takes {method.input_type.name}")
            if method.output_type.name != response:
                wrong.append(f"{method.full_name} returns {method.output_type.name}")
    assert wrong == []


def test_packages_match_paths_and_each_file_has_at_most_one_service(
    source: descriptor_pb2.FileDescriptorSet,
) -> None:
    for file in source.file:
        area = file.name.split("/")[1]
        assert file.package == f"tailor.{area}.v1", file.name
        assert file.name.startswith(f"tailor/{area}/v1/"), file.name
        assert len(file.service) <= 1, file.name


Element = tuple[str, tuple[int, ...], Message]


def _elements(file: descriptor_pb2.FileDescriptorProto) -> Iterator[Element]:
    """Every message, field, enum, enum value, service and RPC: name, source path, descriptor."""

    def enum(
        prefix: str, path: tuple[int, ...], e: descriptor_pb2.EnumDescriptorProto
    ) -> Iterator[Element]:
        yield f"{prefix}.{e.name}", path, e
        for i, value in enumerate(e.value):
            yield f"{prefix}.{e.name}.{value.name}", (*path, ENUM_VALUE, i), value

    def message(
        prefix: str, path: tuple[int, ...], m: descriptor_pb2.DescriptorProto
    ) -> Iterator[Element]:
        name = f"{prefix}.{m.name}"
        if m.options.map_entry:
            return
        yield name, path, m
        for i, field in enumerate(m.field):
            yield f"{name}.{field.name}", (*path, MESSAGE_FIELD, i), field
        for i, inner in enumerate(m.nested_type):
            yield from message(name, (*path, MESSAGE_NESTED, i), inner)
        for i, inner_enum in enumerate(m.enum_type):
            yield from enum(name, (*path, MESSAGE_ENUM, i), inner_enum)

    for i, m in enumerate(file.message_type):
        yield from message(file.package, (FILE_MESSAGE, i), m)
    for i, e in enumerate(file.enum_type):
        yield from enum(file.package, (FILE_ENUM, i), e)
    for i, service in enumerate(file.service):
        service_name = f"{file.package}.{service.name}"
        yield service_name, (FILE_SERVICE, i), service
        for j, method in enumerate(service.method):
            yield f"{service_name}.{method.name}", (FILE_SERVICE, i, SERVICE_METHOD, j), method


def test_every_file_opens_with_a_summary(source: descriptor_pb2.FileDescriptorSet) -> None:
    short = [
        file.name
        for file in source.file
        if len(gen.comments(file).get((FILE_SYNTAX,), "").split()) < 20
    ]
    assert short == []


def test_every_message_field_enum_value_service_and_rpc_is_commented(
    source: descriptor_pb2.FileDescriptorSet,
) -> None:
    bare = []
    for file in source.file:
        leading = gen.comments(file)
        bare += [name for name, path, _ in _elements(file) if path not in leading]
    assert bare == []


def test_every_rpc_comment_states_its_error_semantics(
    source: descriptor_pb2.FileDescriptorSet,
) -> None:
    silent = []
    for file in source.file:
        leading = gen.comments(file)
        for i, service in enumerate(file.service):
            for j, method in enumerate(service.method):
                comment = leading.get((FILE_SERVICE, i, SERVICE_METHOD, j), "")
                if not ERROR_SEMANTICS.search(comment):
                    silent.append(f"{service.name}.{method.name}")
    assert silent == []


def test_personal_fields_say_so(source: descriptor_pb2.FileDescriptorSet) -> None:
    personal_types = {".tailor.common.v1.PersonalField", ".tailor.common.v1.EncryptedField"}
    unmarked = []
    for file in source.file:
        leading = gen.comments(file)
        for name, path, element in _elements(file):
            if (
                isinstance(element, descriptor_pb2.FieldDescriptorProto)
                and element.type_name in personal_types
                and "Personal" not in leading.get(path, "")
            ):
                unmarked.append(name)
    assert unmarked == []


def test_wire_lock_catches_a_renumbered_or_retyped_field(
    source: descriptor_pb2.FileDescriptorSet,
) -> None:
    locked = {
        "field tailor.common.v1.Money.1": "amount single int64",
        "field tailor.common.v1.Money.2": "price single string",
        "value tailor.common.v1.Comparison.1": "COMPARISON_EQUALS",
    }
    assert len(gen.wire_problems(locked, source)) == 3


def test_wire_lock_catches_a_removed_field_enum_value_or_rpc(
    source: descriptor_pb2.FileDescriptorSet,
) -> None:
    locked = {
        "field tailor.common.v1.Money.9": "cents single int64",
        "value tailor.common.v1.Comparison.99": "COMPARISON_LIKE",
        "rpc tailor.ingest.v1.IngestService.Upload": (
            "tailor.ingest.v1.UploadRequest tailor.ingest.v1.UploadResponse unary unary"
        ),
    }
    assert len(gen.wire_problems(locked, source)) == 3


def test_wire_lock_accepts_a_removed_field_whose_number_is_reserved(
    source: descriptor_pb2.FileDescriptorSet,
) -> None:
    locked = {
        "field tailor.events.v1.Envelope.24": (
            "segment_membership_changed single tailor.events.v1.SegmentMembershipChanged"
        )
    }
    assert gen.wire_problems(locked, source) == []


def test_the_committed_lock_covers_every_field(source: descriptor_pb2.FileDescriptorSet) -> None:
    current, _ = gen.wire_entries(source)
    locked = gen.read_lock()
    assert sorted(set(current) - set(locked)) == []
    assert gen.wire_problems(locked, source) == []
