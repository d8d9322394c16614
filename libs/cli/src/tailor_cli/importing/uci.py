"""The UCI "Online Retail" line-item file as customer events, with totals to reconcile.

Every line belongs to exactly one event: the lines of an invoice make one order event —
``Order Completed`` for an invoice, ``Order Refunded`` for a cancellation (``C…``), with the
refunded quantities stated positive — so the file's lines, quantities and amounts can be
matched exactly against what ingest answered. Lines ingest must refuse (negative
quantities outside a cancellation, the negative "adjust bad debt" prices of ``A…``
invoices) are sent as they are and come back rejected with a reason; nothing is dropped
on the way. Rows without a CustomerID are anonymous guests keyed by their invoice.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from tailor.common.v1 import common_pb2
from tailor.events.v1 import events_pb2

HEADER = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]
CURRENCY = "GBP"
SHOP_TIME = ZoneInfo("Europe/London")  # invoice times are the UK shop's local times
COUNTRIES = {
    "Australia": "AU", "Austria": "AT", "Bahrain": "BH", "Belgium": "BE", "Brazil": "BR",
    "Canada": "CA", "Cyprus": "CY", "Czech Republic": "CZ", "Denmark": "DK", "EIRE": "IE",
    "Finland": "FI", "France": "FR", "Germany": "DE", "Greece": "GR", "Hong Kong": "HK",
    "Iceland": "IS", "Israel": "IL", "Italy": "IT", "Japan": "JP", "Lebanon": "LB",
    "Lithuania": "LT", "Malta": "MT", "Netherlands": "NL", "Norway": "NO", "Poland": "PL",
    "Portugal": "PT", "RSA": "ZA", "Saudi Arabia": "SA", "Singapore": "SG", "Spain": "ES",
    "Sweden": "SE", "Switzerland": "CH", "USA": "US", "United Arab Emirates": "AE",
    "United Kingdom": "GB",
    # "Channel Islands", "European Community" and "Unspecified" name no one country.
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Line:
    invoice: str
    stock_code: str
    description: str
    quantity: int
    invoiced_at: datetime
    unit_price: Decimal
    customer_id: str
    country: str


@dataclass
class Invoice:
    number: str
    lines: list[Line] = field(default_factory=list)

    @property
    def cancelled(self) -> bool:
        return self.number.startswith("C")

    @property
    def subject(self) -> str:
        customer = self.lines[0].customer_id
        return f"uci-{customer}" if customer else f"guest-{self.number}"

    @property
    def quantity(self) -> int:
        return sum(abs(line.quantity) for line in self.lines)

    @property
    def amount(self) -> Decimal:
        return sum((abs(line.quantity) * line.unit_price for line in self.lines), Decimal(0))


def is_uci_header(header: list[str]) -> bool:
    return header == HEADER


def _open(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def read_lines(path: Path) -> Iterator[Line]:
    with _open(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if not is_uci_header(header):
            raise ValueError(f"{path} does not have the UCI Online Retail columns")
        for row in reader:
            invoice, code, description, quantity, when, price, customer, country = row
            yield Line(
                invoice=invoice,
                stock_code=code,
                description=description,
                quantity=int(quantity),
                invoiced_at=datetime.fromisoformat(when).replace(tzinfo=SHOP_TIME),
                unit_price=Decimal(price),
                customer_id=customer.split(".")[0],
                country=country,
            )


def read_invoices(path: Path) -> Iterator[Invoice]:
    """Invoices in the order they first appear in the file (its lines are grouped by
    invoice, but a stray line is still attached to its own invoice)."""
    invoices: dict[str, Invoice] = {}
    for line in read_lines(path):
        invoices.setdefault(line.invoice, Invoice(line.invoice)).lines.append(line)
    yield from invoices.values()


def _money(amount: Decimal) -> common_pb2.Money:
    return common_pb2.Money(amount=format(amount.normalize(), "f"), currency=CURRENCY)


def invoice_event(invoice: Invoice) -> events_pb2.CustomerEvent:
    """The order event of one invoice; its message id is fixed by the invoice number, so
    importing the same file twice stores every event once."""
    first = invoice.lines[0]
    cancelled = invoice.cancelled
    order = events_pb2.OrderEvent(order_id=invoice.number, affiliation="online")
    for line in invoice.lines:
        order.products.append(
            events_pb2.Product(
                product_id=line.stock_code,
                name=line.description,
                price=_money(line.unit_price),
                # A cancellation states what it gives back as positive quantities.
                quantity=-line.quantity if cancelled else line.quantity,
            )
        )
    revenue = sum(
        (
            (-line.quantity if cancelled else line.quantity) * line.unit_price
            for line in invoice.lines
        ),
        Decimal(0),
    )
    order.revenue.CopyFrom(_money(revenue))
    if cancelled:
        order.return_reason = "other"  # the file says nothing of why, nor of the original order
    event = events_pb2.CustomerEvent(
        message_id=f"uci-{invoice.number}",
        track=events_pb2.Track(
            event="Order Refunded" if cancelled else "Order Completed", order=order
        ),
    )
    if first.customer_id:
        event.user_id = f"uci-{first.customer_id}"
    else:
        event.anonymous_id = f"guest-{invoice.number}"
    event.timestamp.FromDatetime(first.invoiced_at)
    country = COUNTRIES.get(first.country)
    if country:
        event.context.location.country = country
    event.context.channel = "web"
    return event


@dataclass
class FileTotals:
    """Figures computed from the file alone, to hold the import's answers against."""

    lines: int = 0
    invoices: int = 0
    cancellations: int = 0
    guest_invoices: int = 0
    quantity: int = 0  # sum of |Quantity|
    amount: Decimal = Decimal(0)  # sum of |Quantity| x UnitPrice

    def add(self, invoice: Invoice) -> None:
        self.lines += len(invoice.lines)
        self.invoices += 1
        self.cancellations += invoice.cancelled
        self.guest_invoices += not invoice.lines[0].customer_id
        self.quantity += invoice.quantity
        self.amount += invoice.amount


def file_totals(path: Path) -> FileTotals:
    """Totals straight from the CSV rows, independent of the invoice grouping."""
    totals = FileTotals()
    invoices: set[str] = set()
    cancellations: set[str] = set()
    guests: set[str] = set()
    for line in read_lines(path):
        totals.lines += 1
        invoices.add(line.invoice)
        if line.invoice.startswith("C"):
            cancellations.add(line.invoice)
        if not line.customer_id:
            guests.add(line.invoice)
        totals.quantity += abs(line.quantity)
        totals.amount += abs(line.quantity) * line.unit_price
    totals.invoices, totals.cancellations = len(invoices), len(cancellations)
    totals.guest_invoices = len(guests)
    return totals


def accepted_events(path: Path) -> Iterator[events_pb2.CustomerEvent]:
    """The order events of the file that ingest accepts: an invoice with a negative quantity
    or price (a stock write-off, a bad-debt adjustment) is rejected there, so it is left out."""
    for invoice in read_invoices(path):
        event = invoice_event(invoice)
        lines = event.track.order.products
        if not any(p.quantity < 0 or Decimal(p.price.amount or 0) < 0 for p in lines):
            yield event


@dataclass(frozen=True)
class CustomerTotals:
    orders: int = 0
    refunds: int = 0
    revenue: Decimal = Decimal(0)  # net of refunds


def customer_totals(path: Path) -> dict[str, CustomerTotals]:
    """Orders, refunds and net revenue per subject computed from the file alone: what a
    profile built from the import must show."""
    found: dict[str, CustomerTotals] = {}
    for event in accepted_events(path):
        subject = event.user_id or event.anonymous_id
        was = found.get(subject, CustomerTotals())
        amount = Decimal(event.track.order.revenue.amount)
        if event.track.event == "Order Completed":
            found[subject] = CustomerTotals(was.orders + 1, was.refunds, was.revenue + amount)
        else:
            found[subject] = CustomerTotals(was.orders, was.refunds + 1, was.revenue - amount)
    return found
