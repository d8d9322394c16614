"""Regenerate the Python code of Tailor's contracts: protos/ -> libs/protos/src/tailor/.

    python tools/gen_protos.py           # write the generated code, scopes doc and wire lock
    python tools/gen_protos.py --check   # exit 1, listing the files, when any is stale

For every ``protos/tailor/**/*.proto`` it writes ``*_pb2.py`` and ``*_pb2_grpc.py`` (grpcio-tools)
and their ``.pyi`` stubs (mypy-protobuf), an empty ``__init__.py`` in every package below
``tailor`` (``tailor`` itself stays a PEP 420 namespace package, owned by this distribution), and
``py.typed`` markers. It also writes ``docs/api/scopes.md`` from the ``required_scope`` option of
every RPC and the ``Scope`` vocabulary in ``tailor/common/v1/options.proto``.

``protos/wire.lock`` records every field number, enum value and RPC signature ever published.
Regeneration only adds to it, and refuses to run (as ``--check`` fails) when a locked field
or enum value changed name, type or cardinality, or disappeared without its number being
``reserved``, or when a locked RPC changed or disappeared: field numbers are forever.

Output is deterministic (sorted inputs, generated files only, stale ones removed), so the check
is a byte comparison of a fresh generation in a temporary directory with the committed tree.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUTPUT = ROOT / "libs" / "protos" / "src"
SCOPES_DOC = ROOT / "docs" / "api" / "scopes.md"
WIRE_LOCK = PROTOS / "wire.lock"
NAMESPACE = "tailor"

# Extension numbers of tailor/common/v1/options.proto (fixed forever, like any field number).
REQUIRED_SCOPE_FIELD = 50001
SCOPE_NAME_FIELD = 50002
SCOPE_HOLDERS_FIELD = 50003
SCOPE_ENUM = "tailor.common.v1.Scope"

# Paths of SourceCodeInfo locations (field numbers of descriptor.proto).
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_ENUM_VALUE, _SERVICE_METHOD = 2, 2


class GenerationError(Exception):
    """protoc failed, or the contracts break a rule the generator relies on."""


@dataclass(frozen=True)
class ScopeInfo:
    """One entry of the scope vocabulary."""

    name: str
    holders: str
    description: str


@dataclass(frozen=True)
class RpcScope:
    """The scope one RPC declares."""

    service: str
    method: str
    scope: str


def proto_files(protos: Path = PROTOS) -> list[str]:
    """Every .proto below ``protos``, as sorted POSIX paths relative to it."""
    return sorted(p.relative_to(protos).as_posix() for p in protos.rglob("*.proto"))


def _include_paths(protos: Path) -> list[str]:
    # grpc_tools ships the well-known types (google/protobuf/*.proto) in its _proto folder.
    well_known = resources.files("grpc_tools") / "_proto"
    return [f"-I{protos}", f"-I{well_known}"]


def _protoc(args: Sequence[str]) -> None:
    if protoc.main(["grpc_tools.protoc", *args]) != 0:
        raise GenerationError("protoc failed (its errors are printed above)")


def generate(out: Path, protos: Path = PROTOS) -> None:
    """Generate messages, gRPC stubs, mypy stubs and package markers into ``out``."""
    sources = proto_files(protos)
    if not sources:
        raise GenerationError(f"no .proto files under {protos}")
    plugin_dir = Path(sys.executable).parent  # mypy-protobuf installs its plugins beside python
    _protoc(
        [
            f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
            *_include_paths(protos),
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "--mypy_opt=quiet",
            f"--mypy_out={out}",
            "--mypy_grpc_opt=quiet",
            f"--mypy_grpc_out={out}",
            *sources,
        ]
    )
    namespace = out / NAMESPACE
    # Regular packages below the namespace: pkgutil, mypy and the wheel all see them, while
    # `tailor` itself stays open to nothing else (no tailor/__init__.py, by design).
    for directory in sorted(p for p in namespace.rglob("*") if p.is_dir()):
        (directory / "__init__.py").touch()
    # PEP 561 wants the marker in each package of a namespace; mypy also honours the top one.
    (namespace / "py.typed").touch()
    for area in sorted(p for p in namespace.iterdir() if p.is_dir()):
        (area / "py.typed").touch()


def descriptor_set(protos: Path = PROTOS) -> descriptor_pb2.FileDescriptorSet:
    """The contracts' descriptors with their comments (source info), without dependencies."""
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "contracts.binpb"
        _protoc(
            [
                *_include_paths(protos),
                "--include_source_info",
                f"--descriptor_set_out={target}",
                *proto_files(protos),
            ]
        )
        return descriptor_pb2.FileDescriptorSet.FromString(target.read_bytes())


def string_option(options: Message, field_number: int) -> str:
    """A string-valued custom option, read without relying on the generated options module.

    When that module is not imported (as in this tool), the parsed options do not know
    Tailor's extensions and their values sit among the unknown fields; when it is (as in the
    tests), they are ordinary extension fields.
    """
    for descriptor, value in options.ListFields():
        if descriptor.is_extension and descriptor.number == field_number:
            return str(value)
    unknown = UnknownFieldSet(options)
    for index in range(len(unknown)):
        field = unknown[index]
        if field.field_number == field_number and isinstance(field.data, bytes):
            return str(field.data.decode())
    return ""


def comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Leading comments of a file's elements, keyed by their SourceCodeInfo path."""
    return {
        tuple(location.path): location.leading_comments.strip()
        for location in file.source_code_info.location
        if location.leading_comments.strip()
    }


def scope_vocabulary(files: descriptor_pb2.FileDescriptorSet) -> dict[str, ScopeInfo]:
    """The Scope enum of options.proto: scope string -> holders and description."""
    for file in files.file:
        for enum_index, enum in enumerate(file.enum_type):
            if f"{file.package}.{enum.name}" != SCOPE_ENUM:
                continue
            leading = comments(file)
            vocabulary = {}
            for value_index, value in enumerate(enum.value):
                name = string_option(value.options, SCOPE_NAME_FIELD)
                if value.number == 0:
                    continue
                if not name:
                    raise GenerationError(f"{SCOPE_ENUM}.{value.name} has no scope_name")
                path = (_FILE_ENUM, enum_index, _ENUM_VALUE, value_index)
                vocabulary[name] = ScopeInfo(
                    name=name,
                    holders=string_option(value.options, SCOPE_HOLDERS_FIELD),
                    description=" ".join(leading.get(path, "").split()),
                )
            return vocabulary
    raise GenerationError(f"{SCOPE_ENUM} is not defined")


def rpc_scopes(files: descriptor_pb2.FileDescriptorSet) -> Iterator[RpcScope]:
    """Every RPC with the scope it declares (empty when it declares none), in file order."""
    for file in sorted(files.file, key=lambda f: f.name):
        for service in file.service:
            for method in service.method:
                yield RpcScope(
                    service=f"{file.package}.{service.name}",
                    method=method.name,
                    scope=string_option(method.options, REQUIRED_SCOPE_FIELD),
                )


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def scopes_markdown(files: descriptor_pb2.FileDescriptorSet) -> str:
    """docs/api/scopes.md: the scope vocabulary, then every RPC with its scope and holders."""
    vocabulary = scope_vocabulary(files)
    rpcs = list(rpc_scopes(files))
    undeclared = [f"{r.service}/{r.method}" for r in rpcs if not r.scope]
    unknown = [f"{r.service}/{r.method}: {r.scope}" for r in rpcs if r.scope not in vocabulary]
    if undeclared or unknown:
        raise GenerationError(
            "every RPC needs a required_scope from tailor.common.v1.Scope:\n  "
            + "\n  ".join(undeclared + [u for u in unknown if u not in undeclared])
        )
    lines = [
        "# RPC scopes",
        "",
        "Generated by `make gen` (`tools/gen_protos.py`) from the contracts; do not edit.",
        "",
        "Every RPC declares the scope its caller needs with",
        '`option (tailor.common.v1.required_scope) = "…"`. The core interceptor refuses a',
        "call whose token or API key lacks the scope (`PERMISSION_DENIED`) and any RPC that",
        "declares none. The vocabulary is the `tailor.common.v1.Scope` enum in",
        "`protos/tailor/common/v1/options.proto`; add a scope there (with its holders) before",
        "an RPC uses it.",
        "",
        "## Scopes",
        "",
        "| scope | grants | held by |",
        "|---|---|---|",
    ]
    for info in vocabulary.values():
        lines.append(f"| `{info.name}` | {_cell(info.description)} | {_cell(info.holders)} |")
    lines += [
        "",
        "## RPCs",
        "",
        "| service | RPC | scope | held by |",
        "|---|---|---|---|",
    ]
    for rpc in rpcs:
        holders = _cell(vocabulary[rpc.scope].holders)
        lines.append(f"| `{rpc.service}` | `{rpc.method}` | `{rpc.scope}` | {holders} |")
    return "\n".join(lines) + "\n"


# --- the wire lock -------------------------------------------------------------------------

_LOCK_HEADER = """\
# Every field number, enum value and RPC of protos/ that was ever generated: field numbers
# are forever. `tools/gen_protos.py` only adds lines; it refuses to regenerate when a locked
# entry changed or disappeared without `reserved` (RPCs cannot be reserved: keep them).
# Remove a line by hand only for an entry that never reached a released build.
#
#   field <message>.<number> <name> <single|repeated> <type>
#   value <enum>.<number> <name>
#   rpc <service>.<method> <request> <response> <unary|stream> <unary|stream>
"""


def _walk_messages(
    prefix: str, messages: Iterable[descriptor_pb2.DescriptorProto]
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    for message in messages:
        name = f"{prefix}.{message.name}"
        yield name, message
        yield from _walk_messages(name, message.nested_type)


def _all_enums(
    file: descriptor_pb2.FileDescriptorProto,
) -> Iterator[tuple[str, descriptor_pb2.EnumDescriptorProto]]:
    for enum in file.enum_type:
        yield f"{file.package}.{enum.name}", enum
    for name, message in _walk_messages(file.package, file.message_type):
        for enum in message.enum_type:
            yield f"{name}.{enum.name}", enum


def _field_type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.type_name:
        return field.type_name.lstrip(".")
    return descriptor_pb2.FieldDescriptorProto.Type.Name(field.type).removeprefix("TYPE_").lower()


def wire_entries(
    files: descriptor_pb2.FileDescriptorSet,
) -> tuple[dict[str, str], Callable[[str], bool]]:
    """The lock entries of the contracts now, and a test of whether a key's number is reserved."""
    entries: dict[str, str] = {}
    reserved: dict[str, list[tuple[int, int]]] = {}  # container -> inclusive ranges
    for file in files.file:
        for name, message in _walk_messages(file.package, file.message_type):
            if message.options.map_entry:
                continue  # described by the map field that owns it
            reserved[name] = [(r.start, r.end - 1) for r in message.reserved_range]
            for field in message.field:
                cardinality = "repeated" if field.label == field.LABEL_REPEATED else "single"
                entries[f"field {name}.{field.number}"] = (
                    f"{field.name} {cardinality} {_field_type(field)}"
                )
        for name, enum in _all_enums(file):
            reserved[name] = [(r.start, r.end) for r in enum.reserved_range]
            for value in enum.value:
                entries[f"value {name}.{value.number}"] = value.name
        for service in file.service:
            for method in service.method:
                entries[f"rpc {file.package}.{service.name}.{method.name}"] = " ".join(
                    [
                        method.input_type.lstrip("."),
                        method.output_type.lstrip("."),
                        "stream" if method.client_streaming else "unary",
                        "stream" if method.server_streaming else "unary",
                    ]
                )

    def is_reserved(key: str) -> bool:
        kind, _, path = key.partition(" ")
        container, _, number = path.rpartition(".")
        if kind == "rpc" or not number.lstrip("-").isdigit():
            return False
        return any(low <= int(number) <= high for low, high in reserved.get(container, []))

    return entries, is_reserved


def read_lock(path: Path = WIRE_LOCK) -> dict[str, str]:
    """The committed lock: key ("field pkg.Message.3") -> value ("name single string")."""
    if not path.is_file():
        return {}
    entries = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            kind, path_, value = line.split(" ", 2)
            entries[f"{kind} {path_}"] = value
    return entries


def wire_problems(locked: dict[str, str], files: descriptor_pb2.FileDescriptorSet) -> list[str]:
    """Locked entries the contracts now break (changed, or gone without being reserved)."""
    current, is_reserved = wire_entries(files)
    problems = []
    for key, value in locked.items():
        if key in current and current[key] != value:
            problems.append(f"{key}: was `{value}`, now `{current[key]}`")
        elif key not in current and not is_reserved(key):
            problems.append(f"{key}: `{value}` is gone and its number is not reserved")
    return problems


def _lock_order(key: str) -> tuple[str, str, int, str]:
    kind, _, path = key.partition(" ")
    container, _, last = path.rpartition(".")
    return (kind, container, int(last), "") if last.isdigit() else (kind, container, 0, last)


def lock_text(locked: dict[str, str], files: descriptor_pb2.FileDescriptorSet) -> str:
    """The lock after this generation: every locked entry plus every new one."""
    merged = {**locked, **wire_entries(files)[0]}
    body = [f"{key} {merged[key]}" for key in sorted(merged, key=_lock_order)]
    return _LOCK_HEADER + "\n".join(body) + "\n"


# --- generation and its check -----------------------------------------------------------------


def _tree(root: Path) -> dict[str, Path]:
    """Files of a generated ``tailor`` tree (bytecode caches aside), by relative path."""
    base = root / NAMESPACE
    if not base.is_dir():
        return {}
    return {
        p.relative_to(root).as_posix(): p
        for p in sorted(base.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def stale_files(committed: Path, fresh: Path) -> list[str]:
    """Paths (relative to the source roots) that are missing, extra or different."""
    old, new = _tree(committed), _tree(fresh)
    return sorted(
        name
        for name in old.keys() | new.keys()
        if name not in old
        or name not in new
        or not filecmp.cmp(old[name], new[name], shallow=False)
    )


def _sync(fresh: Path, target: Path) -> list[str]:
    """Make ``target``'s tree equal to ``fresh``'s; return what changed."""
    changed = stale_files(target, fresh)
    new = _tree(fresh)
    for name in changed:
        destination = target / name
        if name in new:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(new[name], destination)
        else:
            destination.unlink()
    # Directories of removed protos: gone once they hold nothing but bytecode caches.
    base = target / NAMESPACE
    for directory in sorted((p for p in base.rglob("*") if p.is_dir()), reverse=True):
        if directory.name != "__pycache__" and not any(
            p.is_file() and "__pycache__" not in p.relative_to(directory).parts
            for p in directory.rglob("*")
        ):
            shutil.rmtree(directory)
    return changed


def _derived_documents() -> dict[Path, str]:
    """The files derived from the descriptors, with their expected content.

    Raises GenerationError when the contracts break the wire lock or the scope rules.
    """
    files = descriptor_set()
    locked = read_lock()
    problems = wire_problems(locked, files)
    if problems:
        raise GenerationError(
            "the contracts break protos/wire.lock (field numbers are forever):\n  "
            + "\n  ".join(problems)
        )
    return {SCOPES_DOC: scopes_markdown(files), WIRE_LOCK: lock_text(locked, files)}


def _differs(path: Path, content: str) -> bool:
    return not path.is_file() or path.read_text(encoding="utf-8") != content


def check() -> list[str]:
    """Files a regeneration would change (generated code, scopes document, wire lock).

    Raises GenerationError when the contracts cannot be generated at all.
    """
    documents = _derived_documents()
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        generate(fresh)
        differing = [f"{OUTPUT.relative_to(ROOT)}/{n}" for n in stale_files(OUTPUT, fresh)]
    differing += [
        path.relative_to(ROOT).as_posix()
        for path, content in documents.items()
        if _differs(path, content)
    ]
    return differing


def write() -> list[str]:
    """Regenerate everything in place; return the files that changed."""
    documents = _derived_documents()  # refuse before touching anything
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        generate(fresh)
        changed = [f"{OUTPUT.relative_to(ROOT)}/{n}" for n in _sync(fresh, OUTPUT)]
    for path, content in documents.items():
        if _differs(path, content):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
            changed.append(path.relative_to(ROOT).as_posix())
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the generated files are stale"
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            differing = check()
            if differing:
                print(
                    "generated files are stale; run `make gen`:",
                    *differing,
                    sep="\n  ",
                    file=sys.stderr,
                )
                return 1
            print(f"generated files are fresh ({len(proto_files())} protos)")
            return 0
        changed = write()
    except GenerationError as error:
        print(f"gen_protos: {error}", file=sys.stderr)
        return 2
    print(f"regenerated {len(proto_files())} protos; {len(changed)} files changed")
    for name in changed:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
