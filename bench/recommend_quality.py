"""Offline quality of the recommend models on the UCI Online Retail file, against baselines.

Protocol (printed with the results): rows with a CustomerID and a product StockCode (five
digits and an optional letter suffix; postage, fees and manual lines are not products);
purchases are positive-quantity lines of ordinary invoices, a line of a cancellation
(``C…``) invoice is a refund that takes its purchase back. Temporal split: train on
everything before the cutoff (the last ~month is the test period), test on each training
user's purchases after it, leaving out items they bought before the cutoff (from targets
and from recommendations) and items the training period never saw. Hyper-parameters (ALS
factors, regularization and alpha, the popularity window, blend weights) are chosen on a
validation split of the training period only — train before cutoff - 1 month, validate on
the month before the cutoff — and the test period is scored once with the chosen ones.

Also measured on the data given: training time and peak RSS of the co-occurrence replay and
the ALS fit, each in a forked child so one's memory does not hide the other's.

Single-threaded by design (OPENBLAS_NUM_THREADS=1, implicit num_threads=1): the machine is
shared. ``--sample`` runs on the repo's 14,707-line sample in a few seconds.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads BLAS
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import itertools
import json
import re
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tailor_cli.importing.uci import SHOP_TIME, read_lines
from tailor_recommend.domain.blending import BlendWeights, Recommender, blend
from tailor_recommend.domain.cooccurrence import CooccurrenceModel
from tailor_recommend.domain.evaluation import (
    Metrics,
    TemporalSplit,
    evaluate,
    popularity_percentiles,
    temporal_split,
)
from tailor_recommend.domain.factorization import AlsModel, AlsParams, train_als
from tailor_recommend.domain.interactions import (
    EventKind,
    Interaction,
    InteractionMatrix,
    InteractionWeights,
    build_matrix,
)
from tailor_recommend.domain.popularity import PopularityModel
from tailor_recommend.domain.reranking import Source

ROOT = Path(__file__).resolve().parent.parent
FULL = ROOT.parent / "shared" / "data" / "uci-online-retail" / "online_retail.csv.gz"
SAMPLE = ROOT / "data" / "uci-online-retail" / "sample.csv.gz"
PRODUCT = re.compile(r"\d{5}[A-Za-z]{0,2}")
TEST_PERIOD = timedelta(days=30)
K = 20  # answers asked of each model: recall is measured at 20
DEPTH = 100  # candidates per model the blend combines

WEIGHTS = InteractionWeights(purchase=5.0, refund=-5.0, half_life=None)
#: (half-life of the ALS matrix in days or None, ALS parameters). Seasonal data (the test
#: month is the Christmas rush), so a decayed matrix is worth trying; co-occurrence is not
#: decayed in the sweep because its replay is the slow part.
Setting = tuple[int | None, AlsParams]
ALS_GRID: list[Setting] = [
    (half_life, AlsParams(factors=f, regularization=r, alpha=a, iterations=15))
    for half_life, f, r, a in itertools.product((None, 45), (32, 128), (1.0, 5.0), (0.5, 1.0))
]
WINDOWS = (timedelta(days=7), timedelta(days=14), timedelta(days=30), timedelta(days=400))
BLEND_GRID = [
    BlendWeights(als=a, cooccurrence=c, popular=p)
    for a, c, p in itertools.product((0.5, 1.0), (0.0, 0.25, 0.5), (0.3, 0.6, 1.0, 2.0))
]


def load(path: Path) -> list[Interaction]:
    """The file's customer product lines as purchases and refunds, in time order."""
    found = []
    for line in read_lines(path):
        if not line.customer_id or not PRODUCT.fullmatch(line.stock_code):
            continue
        if line.invoice.startswith("C"):
            kind = EventKind.REFUND
        elif line.quantity > 0 and line.invoice[:1].isdigit():
            kind = EventKind.PURCHASE
        else:
            continue  # stock write-offs and adjustments: nobody's preference
        found.append(
            Interaction(f"uci-{line.customer_id}", line.stock_code, kind, line.invoiced_at)
        )
    found.sort(key=lambda i: i.at)
    return found


# --- models built on one training period -----------------------------------------------------


@dataclass
class Trained:
    matrix: InteractionMatrix  # undecayed: histories and popularity percentiles
    cooccurrence: CooccurrenceModel
    popularity: PopularityModel
    now: datetime
    als: dict[Setting, AlsModel]


def build_cooccurrence(train: Sequence[Interaction]) -> CooccurrenceModel:
    model = CooccurrenceModel(half_life=WEIGHTS.half_life, max_neighbours=200, max_history=500)
    for event in train:
        model.add(event.user_id, event.item_id, WEIGHTS.base(event.kind), event.at)
    return model


def build_popularity(train: Sequence[Interaction]) -> PopularityModel:
    model = PopularityModel(bucket=timedelta(days=1))
    for event in train:
        model.add(event.item_id, WEIGHTS.base(event.kind), event.at)
    return model


def decayed(half_life: int | None) -> InteractionWeights:
    return replace(WEIGHTS, half_life=timedelta(days=half_life) if half_life else None)


def build(train: Sequence[Interaction], now: datetime, grid: Sequence[Setting]) -> Trained:
    matrices = {h: build_matrix(train, decayed(h), now) for h in {h for h, _ in grid} | {None}}
    als = {
        (h, params): train_als(matrices[h], params, version="bench", trained_at=now)
        for h, params in grid
    }
    return Trained(matrices[None], build_cooccurrence(train), build_popularity(train), now, als)


# --- the models as recommend functions --------------------------------------------------------


RecommendFn = Callable[[str, frozenset[str], int], list[str]]


def most_popular(trained: Trained, window: timedelta) -> RecommendFn:
    def recommend(user: str, bought: frozenset[str], k: int) -> list[str]:
        found = trained.popularity.popular(k, trained.now, window, exclude=bought)
        return [p.item_id for p in found]

    return recommend


def item_knn(trained: Trained) -> RecommendFn:
    def recommend(user: str, bought: frozenset[str], k: int) -> list[str]:
        history = heaviest(trained.matrix.user_row(user), 50)  # as served
        return [s.item_id for s in trained.cooccurrence.recommend(history, k, bought)]

    return recommend


def heaviest(history: dict[str, float], count: int) -> dict[str, float]:
    return dict(sorted(history.items(), key=lambda pair: -pair[1])[:count])


def als(model: AlsModel) -> RecommendFn:
    def recommend(user: str, bought: frozenset[str], k: int) -> list[str]:
        row = model.users.index(user)
        if row is None:
            return []
        skip = {i for i in (model.items.index(item) for item in bought) if i is not None}
        return [model.items.id(i) for i, _ in model.recommend(row, k, skip)]

    return recommend


def served(recommender: Recommender, trained: Trained) -> RecommendFn:
    from tailor_recommend.domain.blending import Subject
    from tailor_recommend.domain.reranking import Filters, Rules

    def recommend(user: str, bought: frozenset[str], k: int) -> list[str]:
        subject = Subject(user_id=user, history=trained.matrix.user_row(user))
        rules = Rules(filters=Filters(exclude_purchased=True), purchased=bought)
        answer = recommender.recommend(subject, k, trained.now, rules)
        return [c.item_id for c in answer.items]

    return recommend


def recommender(
    trained: Trained, params: Setting, weights: BlendWeights, window: timedelta
) -> Recommender:
    return Recommender(
        cooccurrence=trained.cooccurrence,
        als=trained.als[params],
        popularity=trained.popularity,
        weights=weights,
        popular_window=window,
        candidates_per_model=DEPTH,
        max_history=50,
    )


def blend_sweep(
    trained: Trained,
    split: TemporalSplit,
    params: Setting,
    window: timedelta,
    percentiles: dict[str, float],
) -> list[tuple[BlendWeights, Metrics]]:
    """Every blend weighting on the same per-user candidate lists (computed once)."""
    base = recommender(trained, params, BlendWeights(), window)
    lists: dict[str, dict[Source, list[Any]]] = {}
    popular = base.popular(DEPTH + 200, trained.now)
    for user in split.targets:
        history = dict(
            sorted(trained.matrix.user_row(user).items(), key=lambda p: -p[1])[: base.max_history]
        )
        lists[user] = {
            Source.ALS: base.als_candidates(user, history, DEPTH),
            Source.COOCCURRENCE: base.cooccurrence_candidates(history, (), DEPTH),
            Source.POPULAR: [c for c in popular if c.item_id not in history][:DEPTH],
        }
    results = []
    for weights in BLEND_GRID:

        def recommend(
            user: str, bought: frozenset[str], k: int, weights: BlendWeights = weights
        ) -> list[str]:
            found = blend(lists[user], weights, depth=DEPTH)
            return [c.item_id for c in found if c.item_id not in bought][:k]

        results.append((weights, evaluate(recommend, split, percentiles)))
    return results


def percentiles_of(trained: Trained) -> dict[str, float]:
    counts = trained.matrix.matrix.getnnz(axis=0)  # buyers per item in training
    return popularity_percentiles(
        {trained.matrix.items.id(i): float(c) for i, c in enumerate(counts)}
    )


# --- tuning and the test --------------------------------------------------------------------


@dataclass
class Choice:
    params: Setting
    window: timedelta
    weights: BlendWeights
    validation: dict[str, dict[str, float]]


def tune(train: Sequence[Interaction], cutoff: datetime, log: Callable[[str], None]) -> Choice:
    validation_cutoff = cutoff - TEST_PERIOD
    split = temporal_split(train, validation_cutoff, end=cutoff)
    log(f"validation: train < {validation_cutoff:%Y-%m-%d}, {len(split.targets)} users")
    started = time.perf_counter()
    trained = build(split.train, validation_cutoff, ALS_GRID)
    log(f"validation models built in {time.perf_counter() - started:.0f}s")
    percentiles = percentiles_of(trained)
    found: dict[str, dict[str, float]] = {}
    window = max(
        WINDOWS,
        key=lambda w: _note(
            found, f"mostpop {w.days}d", evaluate(most_popular(trained, w), split, percentiles)
        ),
    )
    params = max(
        ALS_GRID,
        key=lambda p: _note(
            found, f"als {_setting(p)}", evaluate(als(trained.als[p]), split, percentiles)
        ),
    )
    weights, _ = max(
        blend_sweep(trained, split, params, window, percentiles),
        key=lambda pair: _note(found, f"blend {_weights(pair[0])}", pair[1]),
    )
    log(f"chosen: popular window {window.days}d, ALS {_setting(params)}, blend {_weights(weights)}")
    return Choice(params, window, weights, found)


def _note(found: dict[str, dict[str, float]], name: str, metrics: Metrics) -> float:
    found[name] = metrics.as_dict()
    return metrics.ndcg10


def _setting(setting: Setting) -> str:
    h, p = setting
    return (
        f"half_life={h or 0}d factors={p.factors} reg={p.regularization} alpha={p.alpha} "
        f"iters={p.iterations}"
    )


def _weights(w: BlendWeights) -> str:
    return f"als={w.als} cooc={w.cooccurrence} pop={w.popular}"


# --- cost of training -------------------------------------------------------------------------


def _rss_now() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def measured(work: Callable[[], object]) -> dict[str, float]:
    """Run ``work`` in a forked child: seconds, the child's peak RSS, and that peak minus
    the RSS it started with (the data and models already loaded)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(reader)
        start_rss = _rss_now()
        started = time.perf_counter()
        work()
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        os.write(
            writer,
            json.dumps(
                {
                    "seconds": seconds,
                    "peak_rss_bytes": peak,
                    "peak_increase_bytes": peak - start_rss,
                }
            ).encode(),
        )
        os._exit(0)
    os.close(writer)
    chunks = []
    while chunk := os.read(reader, 65536):
        chunks.append(chunk)
    os.close(reader)
    os.waitpid(pid, 0)
    result: dict[str, float] = json.loads(b"".join(chunks))
    return result


# --- main -------------------------------------------------------------------------------------


def run(path: Path, log: Callable[[str], None]) -> dict[str, Any]:
    started = time.perf_counter()
    interactions = load(path)
    log(
        f"loaded {len(interactions)} interactions from {path.name} "
        f"in {time.perf_counter() - started:.1f}s"
    )
    last = interactions[-1].at
    cutoff = datetime.combine((last - TEST_PERIOD).date(), datetime.min.time(), tzinfo=SHOP_TIME)
    split = temporal_split(interactions, cutoff)
    choice = tune(split.train, cutoff, log)
    costs = {
        "cooccurrence": measured(lambda: build_cooccurrence(split.train)),
        "als": measured(
            lambda: train_als(
                build_matrix(split.train, decayed(choice.params[0]), cutoff),
                choice.params[1],
                version="bench",
                trained_at=cutoff,
            )
        ),
    }
    trained = build(split.train, cutoff, [choice.params])
    percentiles = percentiles_of(trained)
    served_model = recommender(trained, choice.params, choice.weights, choice.window)
    models: dict[str, RecommendFn] = {
        "mostpop": most_popular(trained, choice.window),
        "knn": item_knn(trained),
        "als": als(trained.als[choice.params]),
        "served": served(served_model, trained),
    }
    results = {name: evaluate(fn, split, percentiles) for name, fn in models.items()}
    protocol = {
        "file": path.name,
        "cutoff": cutoff.isoformat(),
        "test_end": last.isoformat(),
        "train_interactions": len(split.train),
        "train_purchases": sum(1 for i in split.train if i.kind is EventKind.PURCHASE),
        "train_refunds": sum(1 for i in split.train if i.kind is EventKind.REFUND),
        "train_users": len(trained.matrix.users),
        "train_items": len(split.catalogue),
        "matrix_nonzeros": int(trained.matrix.matrix.nnz),
        "test_users": len(split.targets),
        "test_pairs": split.test_pairs,
        "dropped_repeat_pairs": split.dropped_repeat,
        "dropped_unseen_item_pairs": split.dropped_unseen,
        "weights": {"purchase": WEIGHTS.purchase, "refund": WEIGHTS.refund},
        "chosen_als_half_life_days": choice.params[0],
        "chosen_als": asdict(choice.params[1]),
        "chosen_popular_window_days": choice.window.days,
        "chosen_blend": asdict(choice.weights),
        "threads": "OPENBLAS_NUM_THREADS=1, implicit num_threads=1",
    }
    report: dict[str, Any] = {
        "protocol": protocol,
        "training": costs,
        "validation": choice.validation,
    }
    for name, metrics in results.items():
        report[f"hr10_{name}"] = metrics.hr10
        report[f"ndcg10_{name}"] = metrics.ndcg10
        report[f"recall20_{name}"] = metrics.recall20
        report[f"coverage10_{name}"] = metrics.coverage10
        report[f"popularity10_{name}"] = metrics.popularity10
    report["seconds"] = time.perf_counter() - started
    return report


def table(report: dict[str, Any]) -> str:
    p = report["protocol"]
    rows = [
        f"UCI Online Retail ({p['file']}): train < {p['cutoff']}, test to {p['test_end']}",
        f"  train: {p['train_interactions']} interactions ({p['train_purchases']} purchases, "
        f"{p['train_refunds']} refunds), {p['train_users']} users, {p['train_items']} items",
        f"  test: {p['test_users']} users, {p['test_pairs']} new (user, item) pairs; dropped "
        f"{p['dropped_repeat_pairs']} repeats of training purchases, "
        f"{p['dropped_unseen_item_pairs']} of unseen items",
        f"  chosen on validation: ALS {p['chosen_als']},",
        f"    ALS matrix half-life {p['chosen_als_half_life_days']} days,",
        f"    popular window {p['chosen_popular_window_days']}d, blend {p['chosen_blend']}",
        "",
        f"  {'model':<10}{'HR@10':>8}{'NDCG@10':>9}{'Rec@20':>8}{'Cov@10':>8}{'Pop@10':>8}",
    ]
    for name in ("mostpop", "knn", "als", "served"):
        rows.append(
            f"  {name:<10}{report[f'hr10_{name}']:>8.4f}{report[f'ndcg10_{name}']:>9.4f}"
            f"{report[f'recall20_{name}']:>8.4f}{report[f'coverage10_{name}']:>8.4f}{report[f'popularity10_{name}']:>8.3f}"
        )
    rows.append("")
    for name, cost in report["training"].items():
        rows.append(
            f"  training {name:<13}{cost['seconds']:>7.1f}s  "
            f"peak RSS {cost['peak_rss_bytes'] / 2**20:>7.0f} MiB"
            f"  (+{cost['peak_increase_bytes'] / 2**20:.0f} MiB over the loaded data)"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sample", action="store_true", help="the repo's sample, for speed")
    parser.add_argument("--file", type=Path, help="another copy of the UCI file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    path = args.file or (SAMPLE if args.sample else FULL)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = run(path, log)
    print(json.dumps(report, indent=2, default=str) if args.json else table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
