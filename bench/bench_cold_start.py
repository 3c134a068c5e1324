"""Figure 3: cold start, a fresh Lambda container from nothing to its first /score response.

Both sides run in the project's local Lambda (``local.container``): the real runtime interface
client (``awslambdaric``) in a new process, with the directory layout, environment and packages
of the Lambda Python runtime. ScoreFunction runs from its ``sam build`` output (built here into
``.run/bench/build``, ScoreFunction and its layer only), so the layer holds exactly the packages
Lambda would get; the floor is ``bench/floor_handler.py`` on the very same layer. The score side
includes the first model load: the registry read in DynamoDB and the artifact in S3 (moto).

As in Lambda, the code is read-only (``PYTHONDONTWRITEBYTECODE``): a module without shipped
bytecode is compiled at every cold start. The shared layer ships its bytecode (its build is
``layers/shared/Makefile``); the ``precompiled`` variant compiles the rest too (the function's own
module, the floor's), so the two variants now differ by little.

When ``sam`` cannot build, both sides fall back to the source tree on the development
virtualenv; the figure says so (its packages are not the runtime's and import slower).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench import ROOT
from bench.report import Figure, Target
from bench.stack import LOG_DIR, REGION, AwsStack, score_body
from bench.stats import interleaved, median, paired_ratios
from local.container import LambdaContainer
from local.template import LambdaFunction, SamTemplate
from support.apigw_events import rest_event

COLD_TARGET = Target("ratio", "<=", 1.8)
BUILD_DIR = LOG_DIR / "build"
FLOOR_DIR = LOG_DIR / "floor"
FUNCTION_ID = "ScoreFunction"

# The function's configuration as deployed, minus the external services the figure leaves out:
# the Pushgateway (figure 2 prices the push) and Sentry (no DSN: nothing is sent).
COLD_ENV = {"PUSHGATEWAY_URL": "", "SENTRY_DSN": "", "ENVIRONMENT": "bench", "POWERTOOLS_LOG_LEVEL": "INFO"}


def build_score_function(build_dir: Path = BUILD_DIR) -> tuple[Path | None, str]:
    """``sam build ScoreFunction`` into ``build_dir`` (cached); returns (template, "") or (None, why)."""
    sam = ROOT / ".venv" / "bin" / "sam"
    if not sam.exists():
        found = shutil.which("sam")
        if not found:
            return None, "sam is not installed"
        sam = Path(found)
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    try:
        out = subprocess.run(
            [
                str(sam),
                "build",
                FUNCTION_ID,
                "--region",
                REGION,
                "--build-dir",
                str(build_dir),
                "--cache-dir",
                str(build_dir.parent / "build-cache"),
                "--cached",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"sam build failed: {exc}"
    template = build_dir / "template.yaml"
    if out.returncode != 0 or not template.is_file():
        return None, "sam build failed: " + (out.stderr or out.stdout).strip().splitlines()[-1:][0][:200]
    return template, ""


def functions(stack: AwsStack, *, precompiled: bool = False) -> tuple[LambdaFunction, LambdaFunction, str, str]:
    """(score, floor, runtime_packages, note): both on the same layer and runtime packages.

    The build is used as ``sam build`` makes it: without bytecode (it unpacks wheels, it does not
    install them), so, Lambda's code directories being read-only, every module -- dependencies
    included -- is compiled at every cold start. ``precompiled``: a copy of the build with every
    module compiled ahead (``compileall``, hash-checked so the zip's timestamps do not matter):
    what a build step that ships bytecode would give.
    """
    template_path, why = build_score_function()
    if template_path is None:
        # The source tree: the handler's folder plus the layer package, on the whole virtualenv.
        template = SamTemplate(ROOT / "template.yaml", region=REGION, endpoint_url=stack.url)
        score = replace(template.function(FUNCTION_ID), layer_dirs=())
        floor_dir = FLOOR_DIR
        packages, note = "venv", f"source tree on the development virtualenv ({why})"
    else:
        build_dir = template_path.parent
        floor_dir = build_dir / "BenchFloor"
        floor_dir.mkdir(exist_ok=True)
        shutil.copy2(ROOT / "bench" / "floor_handler.py", floor_dir / "floor_handler.py")
        for cache in build_dir.rglob("__pycache__"):
            # The layer ships bytecode (layers/shared/Makefile); any other cache was left by
            # earlier local runs and is not in the artifact.
            if "SharedLayer" not in cache.relative_to(build_dir).parts:
                shutil.rmtree(cache, ignore_errors=True)
        if precompiled:
            build_dir = _compiled_copy(build_dir)
            floor_dir = build_dir / "BenchFloor"
        template = SamTemplate(build_dir / "template.yaml", region=REGION, endpoint_url=stack.url)
        score = template.function(FUNCTION_ID, build_dir)
        packages = "lambda"
        note = (
            "sam build output with bytecode compiled ahead"
            if precompiled
            else "sam build output as built (the layer ships bytecode; the function's own module compiles at start)"
        )
        note += ", Lambda runtime packages only"
    if template_path is None:
        floor_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / "bench" / "floor_handler.py", floor_dir / "floor_handler.py")
    floor = LambdaFunction(
        name="pricing-floor-bench",
        handler="floor_handler.handler",
        code_dir=floor_dir,
        layer_dirs=score.layer_dirs,
        timeout=score.timeout,
        memory_mb=score.memory_mb,
        environment=dict(score.environment),
        logical_id="Floor",
        runtime=score.runtime,
    )
    return score, floor, packages, note


def _compiled_copy(build_dir: Path) -> Path:
    target = build_dir.parent / "build-compiled"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(build_dir, target, symlinks=True)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash", str(target)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return target


def overrides(stack: AwsStack, packages: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**stack.env(), **COLD_ENV, **(extra or {})}
    if packages == "lambda":
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # Lambda's code directories are read-only
    if packages == "venv":
        import site

        paths = [ROOT / "functions" / "score", ROOT / "layers" / "shared", Path(site.getsitepackages()[0])]
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    return env


class ColdStart:
    """One fresh container per call: spawn, init, first /score, stop; returns the wall time in ms."""

    def __init__(self, function: LambdaFunction, env: dict[str, str], packages: str, *, expect_model: bool):
        self.function = function
        self.env = env
        self.packages = packages
        self.expect_model = expect_model
        self.init_ms: list[float] = []

    def __call__(self) -> float:
        event = rest_event("POST", "/score", score_body())
        container = LambdaContainer(self.function, self.env, region=REGION, runtime_packages=self.packages, log_dir=LOG_DIR / "containers")
        try:
            started = time.perf_counter()
            result = container.invoke(event)
            wall_ms = (time.perf_counter() - started) * 1000
        finally:
            container.stop()
        if not result.ok:
            raise RuntimeError(f"{self.function.key} cold start failed: {result.payload[:500]!r}")
        response = result.json()
        if response.get("statusCode") != 200:
            raise RuntimeError(f"{self.function.key}: HTTP {response.get('statusCode')}: {response.get('body', '')[:300]}")
        if self.expect_model:
            safety = json.loads(response["body"])["safety"]
            # A quote in the rules holdback (HOLDBACK_RATE of a modelled property's quotes) is
            # priced by rules only after the model was loaded to decide it: it counts.
            if safety["pricing_method"] != "ml_elasticity" and not safety.get("holdback"):
                raise RuntimeError(f"cold /score priced by {safety['pricing_method']}, not by the deployed model")
        if result.init_ms is not None:
            self.init_ms.append(result.init_ms)
        return wall_ms


def cold_start(stack: AwsStack, rounds: int = 7, *, precompiled: bool = False, with_services: bool = False) -> list[Figure]:
    """Figure 3, as ``sam build`` packages the code, Sentry and push off.

    Variants, each against its own floor in the same run: ``precompiled`` (bytecode shipped with
    the code; same target), ``with_services`` (a Sentry DSN -- a local envelope receiver -- and a
    Pushgateway, as deployed; the floor stays bare; informative).
    """
    score_fn, floor_fn, packages, note = functions(stack, precompiled=precompiled)
    with contextlib.ExitStack() as services:
        extra: dict[str, str] = {}
        if with_services:
            from bench.stack import pushgateway, pushgateway_available
            from support.sentry_receiver import SentryReceiver

            if not pushgateway_available():
                return [
                    Figure.waiting(
                        "cold_start_services",
                        "3. cold start, Sentry + push on",
                        "the pinned prometheus-pushgateway is not installed (make setup)",
                    )
                ]
            receiver = services.enter_context(SentryReceiver())
            gateway = services.enter_context(pushgateway())
            extra = {"SENTRY_DSN": receiver.dsn, "PUSHGATEWAY_URL": gateway.url, "SENTRY_TRACES_SAMPLE_RATE": "0.1"}
        score = ColdStart(score_fn, overrides(stack, packages, extra), packages, expect_model=True)
        floor = ColdStart(floor_fn, overrides(stack, packages, extra), packages, expect_model=False)
        score(), floor()  # first runs fill the page cache: not measured
        score.init_ms.clear()
        floor.init_ms.clear()
        runs = interleaved({"score": score, "floor": floor}, rounds)
    figure = Figure(
        key="cold_start",
        title="3. cold start to first /score",
        unit="ms",
        value=median(runs["score"]),
        baseline=median(runs["floor"]),
        baseline_name="floor",
        ratio=median(paired_ratios(runs["score"], runs["floor"])),
        target=COLD_TARGET,
        runs=rounds,
        note=(
            f"new awslambdaric process to its first response, incl. the model load from moto (S3 + DynamoDB); "
            f"{note}; init (import) median {median(score.init_ms):.0f} ms vs floor {median(floor.init_ms):.0f} ms; "
            f"Sentry and push off"
        ),
    )
    if precompiled:
        # Same target: without the compile time both sides share, the service's own overhead shows.
        figure.key, figure.title = "cold_start_precompiled", "3. cold start, bytecode shipped"
        figure.note = (
            f"the same build with every module compiled ahead (compileall, unchecked-hash), as a build "
            f"step could ship it; init median {median(score.init_ms):.0f} ms vs floor "
            f"{median(floor.init_ms):.0f} ms"
        )
    elif with_services:
        figure.key, figure.title, figure.target = "cold_start_services", "3. cold start, Sentry + push on", None
        figure.baseline_name = "bare floor"
        figure.note = (
            f"as deployed: Sentry initialised with a DSN (local envelope receiver), the first push to a "
            f"Pushgateway; init median {median(score.init_ms):.0f} ms"
        )
    return [figure]
