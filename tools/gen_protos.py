"""Regenerate libs/protos/src from protos/: Python messages, gRPC stubs and mypy stubs.

    python tools/gen_protos.py           # write the generated code
    python tools/gen_protos.py --check   # exit 1, listing files, when it is stale

Output is deterministic (sorted inputs, stale files removed), so the check is a plain
comparison of trees.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUTPUT = ROOT / "libs" / "protos" / "src"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out: Path) -> None:
    """Run protoc over every .proto under protos/ into ``out``."""
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    bin_dir = Path(sys.executable).parent  # mypy-protobuf's plugins live beside this Python
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "--mypy_opt=quiet",
        f"--mypy_out={out}",
        "--mypy_grpc_opt=quiet",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # `tailor` stays a namespace package (PEP 420); every level below it is a package.
    for directory in sorted((out / "tailor").rglob("*")):
        if directory.is_dir():
            (directory / "__init__.py").touch()
    (out / "tailor" / "py.typed").touch()


def _generated_files(tree: Path) -> dict[str, Path]:
    base = tree / "tailor"
    if not base.exists():
        return {}
    return {
        str(p.relative_to(tree)): p
        for p in base.rglob("*")
        if p.is_file()
        and (p.name.endswith(GENERATED_SUFFIXES) or p.name in ("__init__.py", "py.typed"))
    }


def stale_files(committed: Path, fresh: Path) -> list[str]:
    """Paths that differ between the committed and freshly generated trees."""
    old, new = _generated_files(committed), _generated_files(fresh)
    differing = [
        name for name in sorted(old.keys() | new.keys()) if name not in old or name not in new
    ]
    differing += [
        name
        for name in sorted(old.keys() & new.keys())
        if not filecmp.cmp(old[name], new[name], shallow=False)
    ]
    return sorted(set(differing))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if the generated code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        generate(fresh)
        differing = stale_files(OUTPUT, fresh)
        if args.check:
            if differing:
                print(
                    "generated code is stale; run `make gen`:",
                    *differing,
                    sep="\n  ",
                    file=sys.stderr,
                )
                return 1
            print(f"generated code is fresh ({len(_generated_files(fresh))} files)")
            return 0
        shutil.rmtree(OUTPUT / "tailor", ignore_errors=True)
        shutil.copytree(fresh / "tailor", OUTPUT / "tailor")
        print(f"generated {len(_generated_files(OUTPUT))} files into {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
