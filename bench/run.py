"""``make bench``: every benchmark of the service, one table; ``make bench-check``: the targets.

    python -m bench.run [--only KEY,...] [--check] [--record bench/RESULTS.md] [--reuse-pricing]

Figures (see each module): 1 warm /score vs the framework floor (``bench_score``), 2 the
metrics push's overhead (``bench_score``), 3 cold start vs the floor (``bench_cold_start``),
4 optimiser rate (``bench_optimiser``), 5 ingest rate and 6 retrain scaling
(``bench_learning``), 7 push size (``bench_metrics``), and the pricing-quality rows of
``make bench-pricing`` (run afresh in its own process, or with ``--reuse-pricing`` read from its
last ``bench/out/pricing.json``).

Keys for ``--only``: warm, push, cold, optimiser, ingest, retrain, push_bytes, pricing.
``--check`` (alone: only the figures with targets, warm, push, cold and push_bytes) exits 1 when
a figure misses its target, 2 when a targeted figure could not be measured. What the functions
log on stdout goes to ``.run/bench/bench.log``, so that stdout shows the table only; the results
also go to ``.run/bench/results.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

from bench import ROOT
from bench.report import Figure, failures, machine_info, record, render_machine, render_text, to_json
from bench.stack import LOG_DIR, AwsStack

ALL = ("warm", "push", "cold", "optimiser", "ingest", "retrain", "push_bytes", "pricing")
CHECKED = ("warm", "push", "cold", "push_bytes")
PRICING_JSON = ROOT / "bench" / "out" / "pricing.json"


@contextlib.contextmanager
def quiet_stdout(log_path) -> Iterator[int]:
    """Send file descriptor 1 (where the functions' loggers write) to ``log_path``; yields a
    descriptor on the real stdout for the report. Logging costs the same as in Lambda: a write."""
    sys.stdout.flush()
    real = os.dup(1)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
    try:
        yield real
    finally:
        sys.stdout.flush()
        os.dup2(real, 1)
        os.close(real)


def pricing_figures(run_fresh: bool, log_path) -> list[Figure]:
    """The ML-vs-rules rows of ``make bench-pricing`` (revenue as a share of the oracle's).

    Run in a process of its own: its handlers must be imported against its own moto stack.
    """
    exit_note = ""
    if run_fresh:
        with open(log_path, "ab") as log:
            done = subprocess.run([sys.executable, "-m", "bench.bench_pricing"], cwd=ROOT, stdout=log, stderr=log, timeout=900, check=False)
        if done.returncode != 0:
            exit_note = f"; this run's bench-pricing exited {done.returncode}, see {log_path}"
    if not PRICING_JSON.is_file():
        return [
            Figure.waiting(
                "pricing", "pricing quality (bench-pricing)", f"no bench/out/pricing.json{exit_note or ': run make bench-pricing'}"
            )
        ]
    data = json.loads(PRICING_JSON.read_text())
    figures = []
    for curve in data.get("curves", []):
        share = {p["policy"]: p["revenue_share"] for p in curve.get("policies", [])}
        ml, rules = share.get("ml_elasticity"), share.get("rule_based")
        figures.append(
            Figure(
                key=f"pricing_{curve['curve']}",
                title=f"pricing: ML revenue share, {curve['curve']}",
                unit="",
                value=ml,
                baseline=rules,
                baseline_name="rules",
                ratio=(ml / rules) if ml and rules else None,
                runs=1,
            )
        )
    if figures:
        figures[0].note = (
            f"from make bench-pricing ({data.get('measured_at', '?')[:16]}, "
            f"{data.get('outcomes_per_curve')} outcomes per curve, verdict {data.get('verdict')}): "
            "expected revenue as a share of the oracle's on simulated demand; its own target is its exit code" + exit_note
        )
    return figures


def run(keys: list[str], out_fd: int, *, pricing_fresh: bool) -> list[Figure]:
    from bench import bench_cold_start, bench_learning, bench_optimiser, bench_score

    def say(text: str) -> None:
        os.write(out_fd, (text + "\n").encode())

    figures: list[Figure] = []

    def step(key: str, title: str, fn: Callable[[], list[Figure]]) -> None:
        if key not in keys:
            return
        started = time.monotonic()
        say(f"... {title}")
        figures.extend(fn())
        say(f"    {time.monotonic() - started:.0f} s")

    needs_aws = {"warm", "push", "cold", "ingest", "retrain"} & set(keys)
    with contextlib.ExitStack() as stack_scope:
        stack = None
        handler = None
        if needs_aws:
            stack = stack_scope.enter_context(AwsStack())
            stack.deploy_model()
            handler = bench_score.load_score_handler(stack)
        step("warm", "1. warm /score vs floor", lambda: bench_score.warm_score(handler))
        step("push", "2. push overhead", lambda: bench_score.push_overhead(handler) + bench_score.push_overhead(handler, checked=True))
        step(
            "cold",
            "3. cold start vs floor",
            lambda: (
                bench_cold_start.cold_start(stack)
                + bench_cold_start.cold_start(stack, precompiled=True)
                + bench_cold_start.cold_start(stack, rounds=5, with_services=True)
            ),
        )
        step("optimiser", "4. optimiser", bench_optimiser.optimiser_rate)
        step("ingest", "5. ingest", lambda: bench_learning.ingest_rate(stack))
        step("retrain", "6. retrain scaling", lambda: bench_learning.retrain_scaling(stack))
        step("push_bytes", "7. push size", bench_score.push_size)
    step("pricing", "pricing quality (make bench-pricing)", lambda: pricing_figures(pricing_fresh, LOG_DIR / "bench.log"))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of {','.join(ALL)} (default: all; with --check: {','.join(CHECKED)})"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a figure misses its target")
    parser.add_argument("--record", type=str, default="", help="write the table into this file's results section")
    parser.add_argument(
        "--reuse-pricing", action="store_true", help="read the last bench/out/pricing.json instead of running make bench-pricing"
    )
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.only.split(",") if k.strip()] or list(CHECKED if args.check else ALL)
    unknown = set(keys) - set(ALL)
    if unknown:
        parser.error(f"unknown figures {sorted(unknown)}; choose from {', '.join(ALL)}")

    info = machine_info(ROOT)
    started = time.monotonic()
    with quiet_stdout(LOG_DIR / "bench.log") as out_fd:
        figures = run(keys, out_fd, pricing_fresh=not args.reuse_pricing)
    info["load_average_at_end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    info["duration"] = f"{time.monotonic() - started:.0f} s"
    print()
    print(render_machine(info))
    print()
    print(render_text(figures))
    (LOG_DIR / "results.json").write_text(to_json(figures, info))
    if args.record:
        record(ROOT / args.record, figures, info)
        print(f"\nrecorded in {args.record}")
    if not args.check:
        return 0
    missed = failures(figures)
    unmeasured = [f for f in figures if f.target and f.verdict == "pending"]
    for f in missed:
        print(f"MISSED: {f.title}: {f.target.describe()} (ratio {f.ratio:.2f}, value {f.value:.3g} {f.unit})")
    for f in unmeasured:
        print(f"NOT MEASURED: {f.title}: {f.pending}")
    if missed:
        return 1
    return 2 if unmeasured else 0


if __name__ == "__main__":
    sys.exit(main())
