"""The ``tailor`` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tailor_cli import (
    completion,
    compliance,
    local_platform,
    profiles,
    recommendations,
    segments,
)
from tailor_cli.importing import command as importing
from tailor_core.settings import SERVICE_NAMES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tailor", description="Run, inspect and operate Tailor.")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".tailor"),
        help="where the local platform keeps its data, logs and state (default: .tailor)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the whole platform on this machine")
    up.add_argument("--services", default=",".join(SERVICE_NAMES), help="comma-separated subset")
    up.add_argument("--base-port", type=int, default=None, help="first gRPC port (default: 50051…)")

    status = commands.add_parser("status", help="health and addresses of each service")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")

    demo = commands.add_parser(
        "demo", help="`tailor up`, then import the real-data sample and print the summary"
    )
    demo.add_argument("--sample", type=Path, default=Path("data/uci-online-retail/sample.csv.gz"))

    commands.add_parser("down", help="stop a platform started with `tailor up`")
    compliance.add_commands(commands)
    profiles.add_commands(commands)
    segments.add_commands(commands)
    recommendations.add_commands(commands)
    importing.add_command(commands)
    completion.add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    completion.complete(parser)
    args = parser.parse_args(argv)
    if args.command == "completion":
        return completion.run(args)
    data_dir: Path = args.data_dir.resolve()
    if args.command == "up":
        names = [name.strip() for name in args.services.split(",") if name.strip()]
        unknown = sorted(set(names) - set(SERVICE_NAMES))
        if unknown:
            raise SystemExit(f"tailor up: unknown services: {', '.join(unknown)}")
        specs = local_platform.default_specs(names, args.base_port)
        return asyncio.run(local_platform.up(data_dir, specs))
    if args.command == "demo":
        specs = local_platform.default_specs(list(SERVICE_NAMES), None)
        return asyncio.run(
            local_platform.up(
                data_dir, specs, after_start=importing.demo_import(args.sample, data_dir)
            )
        )
    if args.command == "status":
        return asyncio.run(local_platform.status(data_dir, args.json))
    if args.command == "down":
        return local_platform.down(data_dir)
    args.data_dir = data_dir
    if args.command == "import":
        return asyncio.run(importing.run(args))
    if args.command == "profile":
        return asyncio.run(profiles.run(args))
    if args.command == "segment":
        return asyncio.run(segments.run(args))
    if args.command == "recommend":
        return asyncio.run(recommendations.run(args))
    return asyncio.run(compliance.run(args))


def run() -> None:
    """Console-script entry: exit quietly when the output pipe closes (``tailor … | head``)."""
    try:
        code = main()
    except BrokenPipeError:
        code = 0
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(code)


if __name__ == "__main__":
    run()
