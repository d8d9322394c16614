"""Any CSV or JSON-lines file as track events, by a column mapping.

A mapping is a JSON object naming, for each event field, the column it comes from::

    {"event": {"column": "action"},     # or a fixed name: {"value": "Product Viewed"}
     "user_id": "customer", "anonymous_id": "device", "timestamp": "time",
     "message_id": "id", "properties": ["sku", "price", "colour"]}

Every row becomes one track event; ``timestamp`` is ISO 8601 (a time without an offset is
read as UTC); property values that read as numbers are sent as numbers.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tailor.events.v1 import events_pb2
from tailor_cli.importing.uci import _open


@dataclass(frozen=True)
class ColumnMapping:
    event_column: str = ""
    event_value: str = ""
    user_id: str = ""
    anonymous_id: str = ""
    timestamp: str = ""
    message_id: str = ""
    properties: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> ColumnMapping:
        event = raw.get("event")
        if not isinstance(event, Mapping) or not (event.get("column") or event.get("value")):
            raise ValueError('the mapping needs "event": {"column": …} or {"value": …}')
        if not (raw.get("user_id") or raw.get("anonymous_id")):
            raise ValueError('the mapping needs "user_id" or "anonymous_id"')
        props = raw.get("properties", [])
        if not isinstance(props, list) or not all(isinstance(p, str) for p in props):
            raise ValueError('"properties" must be a list of column names')
        return cls(
            event_column=str(event.get("column", "")),
            event_value=str(event.get("value", "")),
            user_id=str(raw.get("user_id", "")),
            anonymous_id=str(raw.get("anonymous_id", "")),
            timestamp=str(raw.get("timestamp", "")),
            message_id=str(raw.get("message_id", "")),
            properties=tuple(props),
        )


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a CSV (with a header) or a JSON-lines file, by the file's suffix."""
    name = path.name.removesuffix(".gz")
    with _open(path) as handle:
        if name.endswith((".jsonl", ".ndjson")):
            for number, text in enumerate(handle, start=1):
                if text.strip():
                    row = json.loads(text)
                    if not isinstance(row, dict):
                        raise ValueError(f"line {number} is not a JSON object")
                    yield row
        else:
            yield from csv.DictReader(handle)


def _value(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        number = float(text)
    except ValueError:
        return text
    return number if number == number and abs(number) != float("inf") else text


def row_event(row: Mapping[str, Any], mapping: ColumnMapping) -> events_pb2.CustomerEvent:
    """The track event of one row (ingest judges it; nothing is checked here)."""
    name = mapping.event_value or str(row.get(mapping.event_column, "") or "")
    event = events_pb2.CustomerEvent(
        user_id=str(row.get(mapping.user_id, "") or "") if mapping.user_id else "",
        anonymous_id=str(row.get(mapping.anonymous_id, "") or "") if mapping.anonymous_id else "",
        message_id=str(row.get(mapping.message_id, "") or "") if mapping.message_id else "",
        track=events_pb2.Track(event=name),
    )
    if mapping.timestamp and row.get(mapping.timestamp):
        moment = datetime.fromisoformat(str(row[mapping.timestamp]).replace("Z", "+00:00"))
        event.timestamp.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    values = {p: _value(row[p]) for p in mapping.properties if row.get(p) not in (None, "")}
    if values:
        event.properties.update(values)
    return event
