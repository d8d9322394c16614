"""Make data/uci-online-retail/sample.csv.gz from the full UCI Online Retail file.

Deterministic: every invoice (purchases and cancellations) of the customers whose id's
SHA-256 falls in one bucket of ``--buckets``, plus the guest (no CustomerID) invoices whose
number falls in one bucket of ten times as many, and every "A" adjustment invoice. Whole
invoices only, in file order, so the sample keeps repeat customers and every quirk.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
from pathlib import Path

HERE = Path(__file__).resolve()
DEFAULT_SOURCE = HERE.parents[2] / "shared/data/uci-online-retail/online_retail.csv.gz"
DEFAULT_TARGET = HERE.parents[1] / "data/uci-online-retail/sample.csv.gz"


def _bucket(text: str, buckets: int) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") % buckets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--target", type=Path, default=DEFAULT_TARGET)
    parser.add_argument("--buckets", type=int, default=30)
    args = parser.parse_args()
    with gzip.open(args.source, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(reader)
    kept = [
        row
        for row in rows
        if (row[6] and _bucket(row[6], args.buckets) == 0)
        or (not row[6] and _bucket(row[0], args.buckets * 10) == 0)
        or row[0].startswith("A")
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(kept)
    # mtime=0: the same input gives the same bytes.
    args.target.write_bytes(gzip.compress(buffer.getvalue().encode(), mtime=0))
    customers = {row[6] for row in kept if row[6]}
    invoices = {row[0] for row in kept}
    print(f"{len(kept)} lines, {len(invoices)} invoices, {len(customers)} customers")


if __name__ == "__main__":
    main()
