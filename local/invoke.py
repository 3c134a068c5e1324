"""``make invoke``: run one event through a function's built artifacts, like ``sam local invoke``.

    python -m local.invoke ScoreFunction events/score.json [--env-vars env.json]

The result JSON on stdout and nothing else (logs on stderr); exit status 1 when the function
failed (its error document still printed), 2 for a usage error. The container is retired the
Lambda way before the command returns. The AWS endpoint: ``AWS_ENDPOINT_URL``, else a running
``make run``'s services, else a moto server of its own (docs/local-lambda.md).

Environment: ``LOCAL_BUILD_DIR`` (.aws-sam/build), ``LOCAL_RUN_DIR`` (.run),
``LOCAL_RUNTIME_PACKAGES`` (lambda|venv), ``LOCAL_SHUTDOWN_BUDGET_MS`` (500), ``AWS_REGION``
(us-east-1), and ``local.environment.FORWARDED_ENV`` passed on to the function.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from local import environment
from local.container import ContainerError, InvocationResult, LambdaContainer
from local.services import MotoServer, create_resources
from local.stack import DEFAULT_BUILD_DIR, DEFAULT_RUN_DIR, running_state, template_for
from local.template import DEFAULT_REGION, SamTemplate, TemplateError

log = logging.getLogger("local.invoke")


def read_event(source: str | None) -> bytes:
    """The event document: a file, ``-`` for stdin, or ``{}`` when none is given (as SAM does)."""
    if not source:
        return b"{}"
    if source == "-":
        return sys.stdin.buffer.read()
    return Path(source).read_bytes()


def invoke(
    function_id: str,
    event: bytes,
    *,
    build_dir: Path = DEFAULT_BUILD_DIR,
    run_dir: Path = DEFAULT_RUN_DIR,
    env_vars_file: Path | None = None,
    host_env: Mapping[str, str] | None = None,
    region: str = DEFAULT_REGION,
    runtime_packages: str = "lambda",
    echo: bool = True,
) -> InvocationResult:
    """Invoke ``function_id`` once in a fresh container (see the module doc for the endpoint).

    Raises:
        TemplateError: no such function in the template.
        ContainerError: the function has no build output.
        EnvVarsError: the ``--env-vars`` file is malformed.
    """
    host_env = dict(os.environ if host_env is None else host_env)
    env_vars = environment.load_env_vars(env_vars_file)
    template_path = template_for(build_dir)
    probe = SamTemplate(template_path, region=region)
    if function_id not in probe.function_ids():
        # Accept the deployed name too (pricing-score-dev), as `sam local invoke` does.
        by_name = {probe.physical_name(f): f for f in probe.function_ids()}
        if function_id not in by_name:
            raise TemplateError(f"no function {function_id!r}; the template has {', '.join(probe.function_ids())}")
        function_id = by_name[function_id]
    function_name = probe.physical_name(function_id)
    given = {**environment.forwarded(host_env), **environment.for_function(env_vars, function_id, function_name)}

    moto: MotoServer | None = None
    services: dict[str, str] = {}
    endpoint = given.get("AWS_ENDPOINT_URL", "")
    state = None if endpoint else running_state(run_dir / "state.json")
    if state:
        services = dict(state.get("function_env") or {})
        endpoint = services.get("AWS_ENDPOINT_URL", "")
        log.info("using the services of make run (pid %s): AWS endpoint %s", state["pid"], endpoint)
    elif not endpoint:
        moto = MotoServer(log_path=Path(tempfile.gettempdir()) / f"local-invoke-moto-{os.getpid()}.log").start()
        endpoint = moto.url
        services = {"AWS_ENDPOINT_URL": endpoint}
    try:
        template = SamTemplate(template_path, region=region, endpoint_url=endpoint or None)
        if moto:
            created = create_resources(template.local_resources(), endpoint, region)
            log.info("moto server %s with %s", endpoint, ", ".join(created))
        function = template.function(function_id, build_dir)
        overrides = environment.function_overrides(function_id, function.name, services=services, host_env=host_env, env_vars=env_vars)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        container = LambdaContainer(
            function,
            overrides,
            region=region,
            runtime_packages=runtime_packages,
            echo=sys.stderr if echo else None,
            log_dir=run_dir / "logs",
        )
        with container:
            return container.invoke(event)
    finally:
        if moto:
            moto.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.invoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("function", help="logical id (ScoreFunction) or function name")
    parser.add_argument("event", nargs="?", help="event JSON file, '-' for stdin (default: {})")
    parser.add_argument("--env-vars", "-n", type=Path, help="sam local invoke --env-vars JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="invoke: %(message)s")
    env = os.environ
    try:
        result = invoke(
            args.function,
            read_event(args.event),
            build_dir=Path(env.get("LOCAL_BUILD_DIR") or DEFAULT_BUILD_DIR),
            run_dir=Path(env.get("LOCAL_RUN_DIR") or DEFAULT_RUN_DIR),
            env_vars_file=args.env_vars,
            region=env.get("AWS_REGION") or DEFAULT_REGION,
            runtime_packages=env.get("LOCAL_RUNTIME_PACKAGES") or "lambda",
        )
    except (TemplateError, ContainerError, environment.EnvVarsError, OSError) as exc:
        print(f"invoke: {exc}", file=sys.stderr)
        return 2
    timing = f"{result.duration_ms:.1f} ms" + (f", init {result.init_ms:.0f} ms" if result.init_ms else "")
    log.info("%s on container %s: %s (%s)", result.function, result.container_id, "ok" if result.ok else f"{result.outcome} error", timing)
    sys.stdout.write(result.payload.decode("utf-8", "replace") + "\n")
    sys.stdout.flush()
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
