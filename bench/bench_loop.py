"""The learning loop closed on its own quotes, day by day (``make bench-loop``).

For each simulated property (``bench.loop_market.CURVES``: demand of the model's form and
outside it, one shifting halfway) the loop runs as in production, on a simulated clock:

1. every quote of the day goes through the real scoring service (``ScoringService.score``: the
   request schema, the property cache, the domain pricing with its exploration) with the
   competitor median of that moment in ``market``; the same quote is also priced with
   ``use_ml: false`` -- what rules would have quoted -- and by the oracle that knows the curve;
2. the market books the quoted price with its true probability;
3. at the end of the day the outcomes, with their quote ids, go through the real ingestion
   service (``IngestionService.ingest``, the /learn validation);
4. every night the real retraining service runs its scheduled path (``RetrainingService.scheduled_run``,
   as the cron event runs it): drift, the fit, the revenue judgement against what prices now, the
   conditional deploy.

Stores are in memory (``bench.memory_storage``); everything above them is the service's code.

Per day it reports the share of the oracle's expected revenue earned by the loop (what was
quoted, exploration included), by rules on the same quotes, by the loop's policy without its
exploration, the exploration cost (policy minus loop, in oracle share), and the offline
metrics of Ye et al., KDD 2018 (price-decrease recall, price-increase recall, booking regret)
of the day's policy on held-out outcomes at random prices. It writes ``bench/out/loop.json``
and the learning curves to ``bench/out/loop.png`` (``--png`` elsewhere).

Usage: ``python -m bench.bench_loop [--days 12] [--quotes 160] [--held-out 150] [--seed 1]``
Exits non-zero when a done-when target is missed (see ``verdicts``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

from bench import ROOT

OUT = ROOT / "bench" / "out"
REQUIRED_SHARE = 0.95
#: A day's loop may trail rules by its exploration cost plus this (rounding of shares).
TOLERANCE = 0.002
#: Day 1 of the simulated clock. Fixed, so a seed gives the same figures on any date (the
#: weekdays of the stays move demand); in the past, so the HTTP loop's /learn accepts it.
START = datetime(2026, 11, 17, tzinfo=UTC)


@dataclass
class Day:
    day: int
    quotes: int
    ml_share: float  # share of quotes priced by the model
    explored_share: float
    loop: float  # share of the oracle's expected revenue
    rules: float
    policy: float  # the model's policy on every quote: no exploration, no holdback
    exploration_cost: float
    pdr: float
    pir: float
    regret: float
    holdback_share: float = 0.0  # share of quotes priced by rules as the holdback
    holdback_cost: float = 0.0  # what the holdback quotes forwent against the model's policy
    retrain: str = ""
    retrain_reason: str = ""
    drift: bool = False
    live_version: str | None = None
    guard: dict | None = None  # the drift guard's figures, when it judged the live model
    holdback_guard: dict | None = None  # the holdback's arms and the share decided that night
    exploration_direction: int | None = None  # set that night for tomorrow's rules quotes (-1, 0, 1)

    @property
    def rolled_back(self) -> bool:
        return self.retrain == "deployed" and (self.live_version or "").startswith("rules-since-")

    @property
    def relearned(self) -> bool:
        """A model of a shifted market deployed for a property on rules (its onset found in the window)."""
        return self.retrain == "deployed" and "when the newest outcomes began to disagree" in self.retrain_reason

    @property
    def within_exploration_cost(self) -> bool:
        return self.loop >= self.rules - self.exploration_cost - TOLERANCE


@dataclass
class CurveRun:
    curve: str
    representable: bool
    shift_day: int | None
    days: list[Day] = field(default_factory=list)

    def last(self, n: int = 3) -> dict:
        tail = self.days[-n:]
        mean = lambda name: sum(getattr(d, name) for d in tail) / len(tail)  # noqa: E731
        return {k: mean(k) for k in ("loop", "rules", "policy", "exploration_cost", "holdback_cost")}

    @property
    def first_deploy_night(self) -> int | None:
        return next((d.day for d in self.days if d.retrain == "deployed"), None)

    @property
    def drift_night(self) -> int | None:
        if self.shift_day is None:
            return None
        return next((d.day for d in self.days if d.day >= self.shift_day and (d.drift or d.rolled_back or d.relearned)), None)

    @property
    def recovery_days(self) -> int | None:
        """Days from the shift until the loop is back at 95% of the oracle (or its pre-shift level)."""
        if self.shift_day is None:
            return None
        before = [d.loop for d in self.days if self.shift_day - 3 <= d.day < self.shift_day]
        target = min(REQUIRED_SHARE, (sum(before) / len(before) - 0.02) if before else REQUIRED_SHARE)
        return next((d.day - self.shift_day for d in self.days if d.day >= self.shift_day and d.loop >= target), None)


def _request(property_id: str, q, use_ml: bool) -> dict:
    """The /score request body of one market quote."""
    lo, hi = q.bounds
    return {
        "entity": {"userId": "market", "propertyId": property_id},
        "stay_date": q.stay_date.isoformat(),
        "quote_time": q.quote_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "product": {"los": q.los},
        "inventory": {"capacity": 100, "remaining": q.remaining},
        "market": {"comp_price_p10": round(q.market * 0.85, 2), "comp_price_p50": q.market, "comp_price_p90": round(q.market * 1.2, 2)},
        "costs": {"min_price": lo, "max_price": hi},
        "toggles": {"use_ml": use_ml},
    }


class InProcess:
    """The loop's services in this process on the simulated clock, stores in memory
    (``bench.memory_storage``). ``bench.bench_loop_http.Http`` is the same over ``make run``."""

    def __init__(
        self, curve, seed: int, start: datetime, exploration_rate: float, holdback_rate: float, holdback_maintenance_rate: float = 0.01
    ):
        from bench.memory_storage import MemoryStorage
        from pricing.competitors import CompetitorClient
        from pricing.services.ingestion import IngestionService
        from pricing.services.retraining import RetrainingService
        from pricing.services.scoring import ScoringService
        from pricing.settings import Settings

        self.now = start
        clock = lambda: self.now  # noqa: E731
        self.storage = MemoryStorage(clock)
        settings = Settings(
            model_cache_ttl_seconds=300,
            exploration_rate=exploration_rate,
            holdback_rate=holdback_rate,
            holdback_maintenance_rate=holdback_maintenance_rate,
            # ``make bench-loop EXPLORATION_DIRECTED=false`` measures the loop without it.
            exploration_directed=Settings.from_env(
                {"EXPLORATION_DIRECTED": os.environ.get("EXPLORATION_DIRECTED", "")}
            ).exploration_directed,
        )
        tokens = iter(range(10**9))
        self.scoring = ScoringService(
            settings,
            self.storage,
            self.storage,
            self.storage,
            CompetitorClient("", "", 0.3),
            clock=lambda: self.now.timestamp(),
            new_token=lambda: f"{curve.name}-{seed}-{next(tokens):07d}",
        )
        # What the model's policy would have quoted where the holdback priced by rules.
        self.pure = ScoringService(
            replace(settings, exploration_rate=0.0, holdback_rate=0.0),
            self.storage,
            self.storage,
            self.storage,
            CompetitorClient("", "", 0.3),
            clock=lambda: self.now.timestamp(),
        )
        self.ingestion = IngestionService(self.storage, clock=clock)
        self.retraining = RetrainingService(settings, self.storage, self.storage, self.storage, self.storage, clock=clock)

    def configure(self, property_id: str, base_price: float) -> None:
        self.storage.put_property_config(property_id, base_price)

    def score(self, body: dict) -> dict:
        from pricing.api.schemas import ScoreRequest, quote_response

        return quote_response(*self.scoring.score(ScoreRequest.model_validate(body).to_quote()))

    def policy_price(self, body: dict) -> float:
        from pricing.api.schemas import ScoreRequest

        return self.pure.score(ScoreRequest.model_validate(body).to_quote()).recommendation.price

    def learn(self, outcomes: list[dict]) -> dict:
        return self.ingestion.ingest(outcomes).to_response()

    def retrain(self, property_id: str) -> dict:
        """The nightly retrain, as the cron event runs it; this property's result."""
        answer = self.retraining.scheduled_run(force=False)
        (r,) = [x for x in answer["results"] if x["property_id"] == property_id]
        return r

    def live_version(self, property_id: str) -> str | None:
        return self.storage.get_property_record(property_id).live_version


def run_curve(
    curve,
    *,
    days: int,
    quotes_per_day: int,
    held_out: int,
    seed: int,
    start: datetime,
    exploration_rate: float = 0.1,
    holdback_rate: float = 0.05,
    services=None,
    holdback_maintenance_rate: float = 0.01,
) -> CurveRun:
    """One property's loop, day by day, through ``services`` (``InProcess`` unless given)."""
    from bench.loop_market import Market

    loop = services or InProcess(curve, seed, start, exploration_rate, holdback_rate, holdback_maintenance_rate)
    property_id = f"loop-{curve.name}"
    loop.configure(property_id, curve.base_price)
    market = Market(curve, seed)
    held_market = Market(curve, seed + 10_000)
    booking_rng = random.Random(f"book:{curve.name}:{seed}")
    run = CurveRun(curve.name, curve.representable, curve.shift_day)

    for day in range(days):
        day_start = start + timedelta(days=day)
        totals = dict(loop=0.0, rules=0.0, policy=0.0, oracle=0.0, held=0.0, held_model=0.0)
        outcomes, ml, explored, held = [], 0, 0, 0
        for i in range(quotes_per_day):
            loop.now = day_start + timedelta(hours=8, seconds=i * 14 * 3600 / quotes_per_day)
            q = market.quote(loop.now)
            answer = loop.score(_request(property_id, q, True))
            price, safety = answer["price"], answer["safety"]
            policy_price = safety["exploration"]["policy_price"] or price
            rules_price = loop.score(_request(property_id, q, False))["price"]
            oracle_price = market.oracle_price(q, day + 1)
            p_book = market.probability(q, price, day + 1)
            totals["loop"] += price * p_book
            if safety["holdback"]:
                held += 1
                totals["held"] += policy_price * market.probability(q, policy_price, day + 1)
                policy_price = loop.policy_price(_request(property_id, q, True))
                totals["held_model"] += policy_price * market.probability(q, policy_price, day + 1)
            totals["policy"] += policy_price * market.probability(q, policy_price, day + 1)
            totals["rules"] += rules_price * market.probability(q, rules_price, day + 1)
            totals["oracle"] += oracle_price * market.probability(q, oracle_price, day + 1)
            ml += safety["pricing_method"] == "ml_elasticity"
            explored += safety["exploration"]["explored"]
            outcomes.append(
                {
                    "property_id": property_id,
                    "timestamp": q.quote_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "quoted_price": price,
                    "accepted": booking_rng.random() < p_book,
                    "quote_id": safety["quote_id"],
                    "stay_date": q.stay_date.isoformat(),
                    "comp_p10": round(q.market * 0.85, 2),
                    "comp_p50": q.market,
                    "comp_p90": round(q.market * 1.2, 2),
                    "context": {"occupancy": q.occupancy, "day_of_week": q.stay_date.weekday(), "los": q.los},
                }
            )
        loop.now = day_start + timedelta(hours=23)
        result = loop.learn(outcomes)
        if result["invalid"]:
            raise SystemExit(f"{curve.name}: /learn refused outcomes: {result['errors'][:3]}")

        # KDD'18 offline metrics of today's policy on held-out outcomes at random prices.
        decreases = unbooked = increases = 0
        regrets = []
        for _ in range(held_out):
            q = held_market.quote(loop.now - timedelta(hours=1))
            quoted = round(q.market * held_market.rng.uniform(0.5, 2.0), 2)
            booked = held_market.rng.random() < held_market.probability(q, quoted, day + 1)
            suggested = loop.score(_request(property_id, q, True))["safety"]["exploration"]["policy_price"]
            if booked:
                increases += suggested > quoted
                regrets.append(max(0.0, (quoted - suggested) / quoted))
            else:
                unbooked += 1
                decreases += suggested < quoted

        oracle = totals["oracle"] or 1.0
        record = Day(
            day=day + 1,
            quotes=quotes_per_day,
            ml_share=ml / quotes_per_day,
            explored_share=explored / quotes_per_day,
            loop=totals["loop"] / oracle,
            rules=totals["rules"] / oracle,
            policy=totals["policy"] / oracle,
            # policy = loop + exploration cost + holdback cost: the holdback quotes forwent what
            # the model's price would have earned on them.
            exploration_cost=(totals["policy"] - totals["loop"] - totals["held_model"] + totals["held"]) / oracle,
            holdback_share=held / quotes_per_day,
            holdback_cost=(totals["held_model"] - totals["held"]) / oracle,
            pdr=decreases / unbooked if unbooked else 0.0,
            pir=increases / len(regrets) if regrets else 0.0,
            regret=median(regrets) if regrets else 0.0,
        )
        # The nightly retrain, as the cron event runs it.
        loop.now = day_start + timedelta(days=1, hours=3)
        r = loop.retrain(property_id)
        record.retrain, record.retrain_reason = r["status"], r["reason"]
        record.drift = bool(r.get("drift") and r["drift"].get("detected"))
        record.guard = (r.get("evaluation") or {}).get("rollback_guard")
        record.holdback_guard = (r.get("evaluation") or {}).get("holdback_guard")
        record.exploration_direction = (r.get("evaluation") or {}).get("exploration_direction")
        record.live_version = loop.live_version(property_id)
        run.days.append(record)
    return run


def verdicts(runs: list[CurveRun]) -> list[tuple[str, bool, str]]:
    """The done-when targets, each (what, met, detail)."""
    out = []
    for run in runs:
        bad = [d.day for d in run.days if not d.within_exploration_cost]
        out.append(
            (f"{run.curve}: never below rules by more than the exploration cost", not bad, f"days below: {bad}" if bad else "every day")
        )
        last = run.last()
        if run.representable:
            # As quoted: exploration and the rules holdback included (the learning share, with
            # the holdback's quotes valued at the model's price, is printed beside it).
            learning = last["loop"] + last["holdback_cost"]
            out.append(
                (
                    f"{run.curve}: last 3 days >= {REQUIRED_SHARE:.0%} of the oracle as quoted",
                    last["loop"] >= REQUIRED_SHARE,
                    f"{last['loop']:.1%} (holdback cost {last['holdback_cost']:.2%}; "
                    f"{learning:.1%} with the holdback at the model's price)",
                )
            )
        out.append((f"{run.curve}: last 3 days beat rules", last["loop"] > last["rules"], f"{last['loop']:.1%} vs {last['rules']:.1%}"))
        if run.shift_day is not None:
            rec = run.recovery_days
            out.append(
                (
                    f"{run.curve}: shift on day {run.shift_day} detected and recovered from",
                    run.drift_night is not None and rec is not None,
                    f"drift detected on night {run.drift_night}, recovered {rec} day(s) after the shift",
                )
            )
    return out


def format_report(runs: list[CurveRun], seconds: float) -> str:
    lines = ["Closed-loop pricing: share of the oracle's expected revenue per simulated day", ""]
    for run in runs:
        form = "model's form" if run.representable else "outside the model's form"
        shift = f", demand shift on day {run.shift_day}" if run.shift_day else ""
        lines.append(f"{run.curve} ({form}{shift})")
        lines.append(
            f"  {'day':>3} {'ML':>5} {'expl':>5} {'hold':>5} {'loop':>7} {'rules':>7} {'policy':>7} {'x-cost':>7} "
            f"{'h-cost':>7} {'ok':>3} {'PDR':>5} {'PIR':>5} {'regret':>6}  night's retrain"
        )
        for d in run.days:
            lines.append(
                f"  {d.day:>3} {d.ml_share:>5.0%} {d.explored_share:>5.0%} {d.holdback_share:>5.0%} {d.loop:>7.1%} "
                f"{d.rules:>7.1%} {d.policy:>7.1%} {d.exploration_cost:>7.2%} {d.holdback_cost:>7.2%} "
                f"{'yes' if d.within_exploration_cost else 'NO':>3} {d.pdr:>5.2f} {d.pir:>5.2f} "
                f"{d.regret:>6.3f}  {'rolled back' if d.rolled_back else d.retrain}{' (drift)' if d.drift else ''}: "
                f"{d.retrain_reason[:110]}"
            )
        lines.append("")
    lines.append("Summary (last three days)")
    lines.append(f"  {'curve':<17} {'form':<8} {'loop':>7} {'rules':>7} {'x-cost':>7} {'h-cost':>7} {'1st deploy':>10}  shift")
    for run in runs:
        last = run.last()
        shift = "-" if run.shift_day is None else (f"drift on night {run.drift_night}, recovered in {run.recovery_days} day(s)")
        lines.append(
            f"  {run.curve:<17} {'model' if run.representable else 'outside':<8} {last['loop']:>7.1%} "
            f"{last['rules']:>7.1%} {last['exploration_cost']:>7.2%} {last['holdback_cost']:>7.2%} "
            f"{run.first_deploy_night or '-'!s:>10}  {shift}"
        )
    lines += [
        "",
        "loop: what was quoted (exploration and holdback included); rules: use_ml=false on the same quotes;",
        "policy: the model's policy on every quote (no exploration, no holdback); hold: share of quotes priced",
        "by rules as the holdback; x-cost, h-cost: what exploration and the holdback cost (policy - loop =",
        "x-cost + h-cost); ok: loop >= rules - x-cost. PDR/PIR/regret: Ye et al.,",
        "KDD 2018, of the day's policy on held-out outcomes at random prices. 1st deploy: the night the first",
        f"model went live. {seconds:.0f} s.",
        "",
    ]
    for what, met, detail in verdicts(runs):
        lines.append(f"{'PASS' if met else 'FAIL'}  {what}: {detail}")
    return "\n".join(lines)


def plot(runs: list[CurveRun], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = (len(runs) + 1 + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.9 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, run in zip(flat, runs):
        x = [d.day for d in run.days]
        ax.plot(x, [100 * d.loop for d in run.days], "o-", label="loop (quoted)", color="tab:blue")
        ax.plot(x, [100 * d.rules for d in run.days], "s--", label="rules, same quotes", color="tab:orange")
        ax.plot(x, [100 * d.policy for d in run.days], ":", label="loop without exploration", color="tab:green")
        for d in run.days:
            if d.retrain == "deployed":
                rollback = d.rolled_back
                ax.axvline(d.day + 0.5, color="tab:red" if rollback else "grey", lw=1.0, ls=":" if rollback else "-", alpha=0.7)
        if run.shift_day:
            ax.axvline(run.shift_day - 0.5, color="black", lw=1.5, ls="-.", label="demand shift")
        ax.axhline(95, color="grey", lw=0.6, ls="--")
        ax.set_title(f"{run.curve} ({'model form' if run.representable else 'outside model form'})", fontsize=10)
        ax.set_xlabel("simulated day (grey: model deployed that night; red: rolled back)", fontsize=8)
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
    flat[0].set_ylabel("% of the oracle's expected revenue")
    flat[0].legend(fontsize=7, loc="lower right")
    cost = flat[len(runs)]
    for run in runs:
        cost.plot([d.day for d in run.days], [100 * d.exploration_cost for d in run.days], "o-", ms=3, label=run.curve)
    cost.axhline(0, color="grey", lw=0.6)
    cost.set_title("exploration cost (policy - quoted), % of oracle", fontsize=10)
    cost.set_xlabel("simulated day", fontsize=8)
    cost.legend(fontsize=7)
    cost.grid(alpha=0.3)
    for ax in flat[len(runs) + 1 :]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(
    days: int,
    quotes: int,
    held_out: int,
    seed: int,
    png: Path,
    curves=None,
    holdback_rate: float = 0.05,
    holdback_maintenance_rate: float = 0.01,
    json_path: Path = OUT / "loop.json",
) -> tuple[list[CurveRun], str]:
    from bench.loop_market import CURVES

    started = time.perf_counter()
    start = START
    runs = [
        run_curve(
            c,
            days=days,
            quotes_per_day=quotes,
            held_out=held_out,
            seed=seed,
            start=start,
            holdback_rate=holdback_rate,
            holdback_maintenance_rate=holdback_maintenance_rate,
        )
        for c in (curves or CURVES)
    ]
    text = format_report(runs, time.perf_counter() - started)
    write_json(
        runs,
        json_path,
        days=days,
        quotes_per_day=quotes,
        seed=seed,
        holdback_rate=holdback_rate,
        holdback_maintenance_rate=holdback_maintenance_rate,
    )
    plot(runs, png)
    return runs, text


def write_json(runs: list[CurveRun], path: Path, **header: Any) -> None:
    """Every figure of ``runs`` (each curve's days, the nights' guard figures) and the verdicts,
    after ``header`` (the run's parameters), as JSON at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    curves = [
        {
            "curve": r.curve,
            "representable": r.representable,
            "shift_day": r.shift_day,
            "last3": r.last(),
            "first_deploy_night": r.first_deploy_night,
            "drift_night": r.drift_night,
            "recovery_days": r.recovery_days,
            "days": [asdict(d) for d in r.days],
        }
        for r in runs
    ]
    verdict_list = [{"target": w, "met": m, "detail": d} for w, m, d in verdicts(runs)]
    path.write_text(json.dumps({**header, "curves": curves, "verdicts": verdict_list}, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=12)
    parser.add_argument("--quotes", type=int, default=160, help="quotes per simulated day")
    parser.add_argument("--held-out", type=int, default=150, help="held-out outcomes per day for the offline metrics")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--holdback", type=float, default=0.05, help="rules holdback share of modelled quotes")
    parser.add_argument(
        "--holdback-maintenance", type=float, default=0.01, help="the holdback share once the guard has shown the model beats rules"
    )
    parser.add_argument("--png", type=Path, default=OUT / "loop.png")
    parser.add_argument("--json", type=Path, default=OUT / "loop.json", help="where every figure is written")
    args = parser.parse_args(argv)
    for name in ("PUSHGATEWAY_URL", "SENTRY_DSN"):
        os.environ.pop(name, None)
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    runs, text = run(
        args.days,
        args.quotes,
        args.held_out,
        args.seed,
        args.png,
        holdback_rate=args.holdback,
        holdback_maintenance_rate=args.holdback_maintenance,
        json_path=args.json,
    )
    print(text)
    print(f"\nfigures: {args.json}, learning curves: {args.png}")
    return 0 if all(met for _, met, _ in verdicts(runs)) else 1


if __name__ == "__main__":
    sys.exit(main())
