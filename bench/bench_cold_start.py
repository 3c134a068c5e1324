"""Figure 3: cold start, a fresh Lambda container from nothing to its first /score response.

Both sides run in the project's local Lambda (``local.container``): the real runtime interface
client (``awslambdaric``) in a new process, with the directory layout, environment and packages
of the Lambda Python runtime. ScoreFunction runs from its ``sam build`` output (built here into
``.run/bench/build``, ScoreFunction and its layer only), so the layer holds exactly the packages
Lambda would get; the floor is ``bench/floor_handler.py`` on the very same layer. The score side
includes the first model load: the registry read in DynamoDB and the artifact in S3 (moto).

When ``sam`` cannot build, both sides fall back to the source tree on the development
virtualenv; the figure says so (its packages are not the runtime's and import slower).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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
            [str(sam), "build", FUNCTION_ID, "--region", REGION, "--build-dir", str(build_dir),
             "--cache-dir", str(build_dir.parent / "build-cache"), "--cached"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"sam build failed: {exc}"
    template = build_dir / "template.yaml"
    if out.returncode != 0 or not template.is_file():
        return None, "sam build failed: " + (out.stderr or out.stdout).strip().splitlines()[-1:][0][:200]
    return template, ""


def functions(stack: AwsStack) -> tuple[LambdaFunction, LambdaFunction, str, str]:
    """(score, floor, runtime_packages, note): both on the same layer and runtime packages."""
    template_path, why = build_score_function()
    FLOOR_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "bench" / "floor_handler.py", FLOOR_DIR / "floor_handler.py")
    if template_path is not None:
        template = SamTemplate(template_path, region=REGION, endpoint_url=stack.url)
        score = template.function(FUNCTION_ID, template_path.parent)
        packages, note = "lambda", "sam build output, Lambda runtime packages only"
    else:
        # The source tree: the handler's folder plus the layer package, on the whole virtualenv.
        template = SamTemplate(ROOT / "template.yaml", region=REGION, endpoint_url=stack.url)
        score = replace(template.function(FUNCTION_ID), layer_dirs=())
        packages, note = "venv", f"source tree on the development virtualenv ({why})"
    floor = LambdaFunction(name="pricing-floor-bench", handler="floor_handler.handler", code_dir=FLOOR_DIR,
                           layer_dirs=score.layer_dirs, timeout=score.timeout, memory_mb=score.memory_mb,
                           environment=dict(score.environment), logical_id="Floor", runtime=score.runtime)
    return score, floor, packages, note


def overrides(stack: AwsStack, packages: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**stack.env(), **COLD_ENV, **(extra or {})}
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
        container = LambdaContainer(self.function, self.env, region=REGION, runtime_packages=self.packages,
                                    log_dir=LOG_DIR / "containers")
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
            method = json.loads(response["body"])["safety"]["pricing_method"]
            if method != "ml_elasticity":
                raise RuntimeError(f"cold /score priced by {method}, not by the deployed model")
        if result.init_ms is not None:
            self.init_ms.append(result.init_ms)
        return wall_ms


def cold_start(stack: AwsStack, rounds: int = 7) -> list[Figure]:
    score_fn, floor_fn, packages, note = functions(stack)
    score = ColdStart(score_fn, overrides(stack, packages), packages, expect_model=True)
    floor = ColdStart(floor_fn, overrides(stack, packages), packages, expect_model=False)
    score(), floor()  # first runs fill the page cache and the bytecode caches: not measured
    score.init_ms.clear()
    floor.init_ms.clear()
    runs = interleaved({"score": score, "floor": floor}, rounds)
    return [Figure(
        key="cold_start", title="3. cold start to first /score", unit="ms",
        value=median(runs["score"]), baseline=median(runs["floor"]), baseline_name="floor",
        ratio=median(paired_ratios(runs["score"], runs["floor"])), target=COLD_TARGET, runs=rounds,
        note=(f"new awslambdaric process to first response, incl. the model load from moto (S3 + DynamoDB); "
              f"{note}; init (import) median {median(score.init_ms):.0f} ms vs floor "
              f"{median(floor.init_ms):.0f} ms; Sentry and push off"),
    )]
