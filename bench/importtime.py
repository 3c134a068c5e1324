"""Where a cold start's time goes: ``python -X importtime`` over the handler's import and its
first /score, in the cold-start benchmark's own setting (the ``sam build`` output on the Lambda
runtime's packages, moto holding the bench model), for ScoreFunction and for the floor.

    python -m bench.importtime [--top 25] [--runs 5] [--precompiled]

Prints, per top-level package, the import time spent in its own modules (the sum of
``-X importtime``'s *self* column, so the packages add up to the total) for the score handler
and for the floor, before and during the first invocation, largest difference first: medians
over ``--runs`` interleaved probes, since one probe on a busy machine can charge a 100 ms stall
to whichever module happened to be importing. The last logs are kept in
``.run/bench/importtime-*.log``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from bench.stack import LOG_DIR, REGION, AwsStack, score_body
from bench.stats import median

# Runs inside the function's process: import, then serve one event, marking where one ends.
_PROBE = r"""
import importlib, json, sys, time
module, attr = sys.argv[1].rsplit(".", 1)
t0 = time.perf_counter()
handler = getattr(importlib.import_module(module), attr)
t1 = time.perf_counter()
sys.stderr.write("import time: -- first invocation --\n")
from types import SimpleNamespace
ctx = SimpleNamespace(aws_request_id="bench", function_name="bench", memory_limit_in_mb=1024,
                      invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:bench",
                      get_remaining_time_in_millis=lambda: 10000)
result = handler(json.loads(sys.argv[2]), ctx)
t2 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1000, "first_invocation_ms": (t2 - t1) * 1000,
                  "status": result["statusCode"]}))
"""

MARKER = "-- first invocation --"


def self_time_by_package(log: str) -> dict[tuple[str, bool], int]:
    """Microseconds of import work per (top-level package, during the first invocation).

    Self times, not cumulative ones: every module's own execution counted once, under its own
    package, so the figures add up to the whole import time.
    """
    totals: dict[tuple[str, bool], int] = defaultdict(int)
    during = False
    for line in log.splitlines():
        if not line.startswith("import time:"):
            continue
        if MARKER in line:
            during = True
            continue
        parts = line.split("|", 2)
        self_part = parts[0].removeprefix("import time:").strip()
        if len(parts) != 3 or not self_part.isdigit():
            continue  # the header line
        totals[(parts[2].strip().split(".")[0], during)] += int(self_part)
    return dict(totals)


def probe(function, env: dict[str, str], packages: str, event: str) -> tuple[dict, str]:
    """Run the probe in ``function``'s setting; returns (timings, the ``-X importtime`` log)."""
    from local.container import lambda_environment, runtime_packages_dir

    paths = [function.code_dir] + [layer / "python" for layer in function.layer_dirs]
    if packages == "lambda":
        runtime_dir = runtime_packages_dir()
    else:
        import site

        runtime_dir = Path(site.getsitepackages()[0])
    full_env = lambda_environment(
        function,
        runtime_api="127.0.0.1:9",
        log_stream="bench",
        python_path=paths + [runtime_dir],
        runtime_dir=runtime_dir,
        region=REGION,
        overrides=env,
    )
    flags = ["-S"] if packages == "lambda" else []
    out = subprocess.run(
        [sys.executable, *flags, "-X", "importtime", "-c", _PROBE, function.handler, event],
        cwd=function.code_dir,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{function.handler} failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--runs", type=int, default=5, help="probes per side; per-package medians")
    parser.add_argument("--precompiled", action="store_true", help="the build with bytecode compiled ahead")
    args = parser.parse_args(argv)

    from bench.bench_cold_start import functions, overrides
    from support.apigw_events import rest_event

    event = json.dumps(rest_event("POST", "/score", score_body()))
    with AwsStack() as stack:
        stack.deploy_model()
        score, floor, packages, note = functions(stack, precompiled=args.precompiled)
        env = overrides(stack, packages)
        probe(score, env, packages, event)  # fills the page cache, as the benchmark's warm-up does
        results: dict[str, tuple[dict, dict]] = {}
        runs: dict[str, list[tuple[dict, dict]]] = {"score": [], "floor": []}
        for _ in range(args.runs):  # interleaved, like the benchmark
            for name, function in (("score", score), ("floor", floor)):
                timings, log = probe(function, env, packages, event)
                (LOG_DIR / f"importtime-{name}.log").write_text(log)
                runs[name].append((timings, self_time_by_package(log)))
        for name, samples in runs.items():
            keys = {k for _, t in samples for k in t}
            results[name] = (
                {k: median([t[k] for t, _ in samples]) for k in samples[0][0]},
                {k: median([t.get(k, 0) for _, t in samples]) for k in keys},
            )
    print(note)
    for name, (timings, _) in results.items():
        print(f"{name}: import {timings['import_ms']:.0f} ms, first invocation {timings['first_invocation_ms']:.0f} ms")
    for title, during in (("at import", False), ("during the first invocation", True)):
        score_t, floor_t = results["score"][1], results["floor"][1]
        packages_seen = {p for p, d in (*score_t, *floor_t) if d == during}
        rows = sorted(((score_t.get((p, during), 0), floor_t.get((p, during), 0), p) for p in packages_seen), key=lambda r: -(r[0] - r[1]))
        total_s, total_f = sum(r[0] for r in rows), sum(r[1] for r in rows)
        print(f"\n{title}: score {total_s / 1000:.0f} ms, floor {total_f / 1000:.0f} ms (self time per package)")
        print(f"  {'score':>8} {'floor':>8}  package")
        for s, f, p in rows[: args.top]:
            print(f"  {s / 1000:8.1f} {f / 1000:8.1f}  {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
