"""Recommend commands: items for a subject, similar and popular items, training the batch
model and the models' status; tables, or --json for scripts.

Credentials as for every command (``tailor_cli.connection``): ``TAILOR_TOKEN``, else a staff
token minted from the local platform's secret. The recommend service's address:
``--recommend-addr``, else ``TAILOR_RECOMMEND_ADDR``, else the local platform.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.markup import escape
from rich.table import Table

from tailor.recommend.v1 import recommend_pb2, recommend_pb2_grpc
from tailor_cli import render
from tailor_cli.connection import Metadata, service_address, staff_metadata
from tailor_cli.rpc_errors import print_rpc_error

RECOMMEND_SCOPES = ["recommend:read", "recommend:admin"]
POLL_SECONDS = 0.5

_STATE_STYLES = {"serving": "green", "training": "yellow", "failed": "red"}


def add_commands(commands: Any) -> None:
    """Register ``recommend`` and its actions on the top-level parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--recommend-addr", default=None, help="recommend service address (host:port)"
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    count = argparse.ArgumentParser(add_help=False)
    count.add_argument("-k", type=int, default=10, help="number of items, 1..100 (default 10)")

    recommend = commands.add_parser(
        "recommend", help="recommendations: for a subject, similar, popular; models"
    ).add_subparsers(dest="action", required=True)

    for_subject = recommend.add_parser(
        "for", parents=[common, count], help="items for a subject, best first, with reasons"
    )
    for_subject.add_argument("subject", metavar="SUBJECT", help="any id of the person")
    for_subject.add_argument(
        "--context-item",
        action="append",
        default=[],
        metavar="ITEM",
        help="an item on the page (the cart, the product shown); repeat, at most 50",
    )
    for_subject.add_argument(
        "--exclude-purchased", action="store_true", help="leave out what the subject bought"
    )
    for_subject.add_argument("--surface", default="", help="e.g. home, cart, email")

    similar = recommend.add_parser(
        "similar", parents=[common, count], help="items similar to an item"
    )
    similar.add_argument("item", metavar="ITEM", help="catalogue product id")
    similar.add_argument("--subject", default="", help="for --exclude-purchased")
    similar.add_argument(
        "--exclude-purchased", action="store_true", help="leave out what --subject bought"
    )

    popular = recommend.add_parser(
        "popular", parents=[common, count], help="popular or trending items"
    )
    popular.add_argument("--segment", default="", help="among this segment's members only")
    popular.add_argument(
        "--trending", action="store_true", help="fastest-growing instead of most popular"
    )

    train = recommend.add_parser("train", parents=[common], help="train the batch model (ALS) now")
    train.add_argument(
        "--wait", action="store_true", help="wait until the new version serves requests"
    )
    train.add_argument(
        "--timeout", type=float, default=600.0, help="seconds --wait waits (default 600)"
    )

    recommend.add_parser(
        "status", parents=[common], help="each model's version, state, coverage and metrics"
    )


Stub = recommend_pb2_grpc.RecommendServiceStub
Handler = Callable[[Stub, argparse.Namespace, Metadata], Awaitable[int]]


async def run(args: argparse.Namespace) -> int:
    """Run one recommend command; gRPC failures print their status and details, exit 1."""
    handlers: dict[str, Handler] = {
        "for": _for_subject,
        "similar": _similar,
        "popular": _popular,
        "train": _train,
        "status": _status,
    }
    credentials = staff_metadata(args.data_dir, RECOMMEND_SCOPES)
    address = service_address(args.recommend_addr or "", "recommend", args.data_dir)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = recommend_pb2_grpc.RecommendServiceStub(channel)
        try:
            return await handlers[args.action](stub, args, credentials)
        except grpc.aio.AioRpcError as error:
            print_rpc_error(error, args.json)
            return 1


# --- rendering helpers -----------------------------------------------------------------------


def _as_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True, unquote_int64_if_possible=True)


def _label(enum_name: str, prefix: str) -> str:
    return enum_name.removeprefix(prefix).lower()


def _model(model: int) -> str:
    return _label(recommend_pb2.Model.Name(model), "MODEL_")  # type: ignore[arg-type]


def _when(stamp: Timestamp) -> str:
    """``2026-01-31 12:00:05`` (UTC), or empty when unset."""
    if not (stamp.seconds or stamp.nanos):
        return ""
    return stamp.ToDatetime().isoformat(sep=" ", timespec="seconds")


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    return table


def _items_table(items: Sequence[recommend_pb2.RecommendedItem], title: str) -> Table:
    table = _table(title, "rank", "item", "category", "score", "reasons")
    table.columns[0].justify = "right"
    table.columns[3].justify = "right"
    for rank, item in enumerate(items, start=1):
        table.add_row(
            str(rank),
            escape(item.item_id),
            escape(item.category),
            f"{item.score:.3f}",
            escape("; ".join(reason.text for reason in item.reasons)),
        )
    return table


def personalization_line(reply: recommend_pb2.RecommendResponse) -> str:
    """``personalized``, or ``not personalized: no consent`` (cold subject, consent
    unavailable) as the response says."""
    if reply.personalized:
        return "personalized"
    why = _label(
        recommend_pb2.NonPersonalizedReason.Name(reply.non_personalized_reason),
        "NON_PERSONALIZED_REASON_",
    ).replace("_", " ")
    return f"not personalized: {why}" if why != "unspecified" else "not personalized"


def _versions_line(versions: Sequence[recommend_pb2.ModelVersion]) -> str:
    return ", ".join(f"{_model(v.model)} {v.version}" for v in versions if v.version)


def _print_items(
    items: Sequence[recommend_pb2.RecommendedItem],
    title: str,
    versions: Sequence[recommend_pb2.ModelVersion],
    recommendation_id: str,
) -> None:
    if items:
        render.console.print(_items_table(items, title))
    else:
        render.console.print(f"{title}: none yet (nothing seen so far)")
    details = [f"recommendation id {escape(recommendation_id)}"]
    if _versions_line(versions):
        details.append(f"models: {escape(_versions_line(versions))}")
    render.console.print("; ".join(details))


# --- serving ---------------------------------------------------------------------------------


async def _for_subject(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.Recommend(
        recommend_pb2.RecommendRequest(
            subject_id=args.subject,
            k=args.k,
            context_items=args.context_item,
            filters=recommend_pb2.Filters(exclude_purchased=args.exclude_purchased),
            surface=args.surface,
        ),
        metadata=creds,
    )
    if args.json:
        render.print_json(_as_dict(reply))
        return 0
    line = personalization_line(reply)
    style = "green" if reply.personalized else "yellow"
    render.console.print(f"[{style}]{escape(line)}[/]")
    _print_items(
        reply.items,
        f"For {escape(args.subject)}",
        reply.model_versions,
        reply.recommendation_id,
    )
    return 0


async def _similar(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.SimilarItems(
        recommend_pb2.SimilarItemsRequest(
            item_id=args.item,
            k=args.k,
            subject_id=args.subject,
            filters=recommend_pb2.Filters(exclude_purchased=args.exclude_purchased),
        ),
        metadata=creds,
    )
    if args.json:
        render.print_json(_as_dict(reply))
        return 0
    if not reply.item_known:
        render.console.print(
            f"[yellow]{escape(args.item)} is unknown or too cold for neighbours: popular items[/]"
        )
    _print_items(
        reply.items,
        f"Similar to {escape(args.item)}",
        reply.model_versions,
        reply.recommendation_id,
    )
    return 0


async def _popular(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.Popular(
        recommend_pb2.PopularRequest(k=args.k, segment_id=args.segment, trending=args.trending),
        metadata=creds,
    )
    if args.json:
        render.print_json(_as_dict(reply))
        return 0
    kind = "Trending" if args.trending else "Popular"
    where = f" among {escape(args.segment)}" if args.segment else ""
    _print_items(reply.items, f"{kind}{where}", reply.model_versions, reply.recommendation_id)
    return 0


# --- models ----------------------------------------------------------------------------------


def model_summary(model: recommend_pb2.ModelInfo) -> dict[str, Any]:
    """One model as the status table and --json show it."""
    return {
        "model": _model(model.model),
        "version": model.version,
        "state": _label(recommend_pb2.ModelState.Name(model.state), "MODEL_STATE_"),
        "users": model.users,
        "items": model.items,
        "interactions": model.interactions,
        "trained_at": _when(model.trained_at) or None,
        "training_seconds": round(model.training_seconds, 3) if model.training_seconds else None,
        "metrics": dict(sorted(model.metrics.items())),
        "next_training_at": _when(model.next_training_at) or None,
        "error": model.error,
    }


def _status_table(models: Sequence[recommend_pb2.ModelInfo], title: str) -> Table:
    """Models one a row; their metrics go in :func:`_metrics_table` so both fit 80 columns."""
    failed = any(model.error for model in models)
    columns = ["model", "version", "state", "users", "items", "trained at", "training"]
    table = _table(title, *columns, *(["error"] if failed else []))
    for index in (0, 2, 5, 6):  # model, state, time and duration stay whole
        table.columns[index].no_wrap = True
    table.columns[1].overflow = "fold"  # a version is one long word
    for index in (3, 4, 6):
        table.columns[index].justify = "right"
    for model in models:
        summary = model_summary(model)
        state = summary["state"]
        seconds = summary["training_seconds"]
        row = [
            summary["model"],
            escape(summary["version"]),
            f"[{_STATE_STYLES.get(state, 'white')}]{state}[/]",
            f"{model.users:,}",
            f"{model.items:,}",
            summary["trained_at"] or "",
            f"{seconds:.1f} s" if seconds is not None else "",
        ]
        table.add_row(*row, *([escape(model.error)] if failed else []))
    return table


def _metrics_table(models: Sequence[recommend_pb2.ModelInfo]) -> Table | None:
    """Offline metrics of each serving version on its holdout; None when no model has any."""
    rows = [
        (_model(model.model), name, value)
        for model in models
        for name, value in sorted(model.metrics.items())
    ]
    if not rows:
        return None
    table = _table("Metrics (holdout)", "model", "metric", "value")
    table.columns[2].justify = "right"
    for model_name, name, value in rows:
        table.add_row(model_name, escape(name), f"{value:.4f}")
    return table


def _print_models(models: Sequence[recommend_pb2.ModelInfo], title: str) -> None:
    render.console.print(_status_table(models, title))
    metrics = _metrics_table(models)
    if metrics is not None:
        render.console.print(metrics)


def _lag_seconds(reply: recommend_pb2.GetModelStatusResponse) -> float | None:
    if not reply.HasField("realtime_lag"):
        return None
    return float(reply.realtime_lag.ToTimedelta().total_seconds())


async def _status(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    reply = await stub.GetModelStatus(recommend_pb2.GetModelStatusRequest(), metadata=creds)
    if args.json:
        render.print_json(
            {
                "models": [model_summary(m) for m in reply.models],
                "realtime_updated_at": _when(reply.realtime_updated_at) or None,
                "realtime_lag_seconds": _lag_seconds(reply),
            }
        )
        return 0
    _print_models(reply.models, "Models")
    lag = _lag_seconds(reply)
    if reply.HasField("realtime_updated_at"):
        behind = f", {lag:.1f} s behind EVENTS" if lag is not None else ""
        render.console.print(
            f"real-time model last updated {_when(reply.realtime_updated_at)}{behind}"
        )
    return 0


def _als(models: Sequence[recommend_pb2.ModelInfo]) -> recommend_pb2.ModelInfo:
    return next(
        (m for m in models if m.model == recommend_pb2.MODEL_ALS),
        recommend_pb2.ModelInfo(model=recommend_pb2.MODEL_ALS),
    )


async def _train(stub: Stub, args: argparse.Namespace, creds: Metadata) -> int:
    before = _als(
        (await stub.GetModelStatus(recommend_pb2.GetModelStatusRequest(), metadata=creds)).models
    )
    started = await stub.TrainModel(recommend_pb2.TrainModelRequest(), metadata=creds)
    models = list(started.models)
    if args.wait:
        als = await _wait_for_new_version(stub, before.version, creds, args.timeout)
        models = [als]
    if args.json:
        render.print_json([model_summary(m) for m in models])
    else:
        title = "Training started" if not args.wait else "Trained"
        _print_models(models, title)
    als = _als(models)
    if als.state == recommend_pb2.MODEL_STATE_FAILED:
        return 1
    serving_new = als.state == recommend_pb2.MODEL_STATE_SERVING and als.version != before.version
    if args.wait and not serving_new:
        if not args.json:
            render.console.print(
                f"[yellow]no new version serving after {args.timeout:.0f} s[/]: follow it with "
                "`tailor recommend status`"
            )
        return 1
    return 0


async def _wait_for_new_version(
    stub: Stub, previous: str, creds: Metadata, timeout_seconds: float
) -> recommend_pb2.ModelInfo:
    """Poll until ALS serves a version other than ``previous``, its training fails, or
    ``timeout_seconds`` pass; the ALS model's last state."""
    deadline = time.monotonic() + timeout_seconds
    with render.console.status("training als…", spinner="dots"):
        while True:
            reply = await stub.GetModelStatus(recommend_pb2.GetModelStatusRequest(), metadata=creds)
            als = _als(reply.models)
            serving_new = als.state == recommend_pb2.MODEL_STATE_SERVING and als.version != previous
            if serving_new or als.state == recommend_pb2.MODEL_STATE_FAILED:
                return als
            if time.monotonic() >= deadline:
                return als
            await asyncio.sleep(POLL_SECONDS)
