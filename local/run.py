"""``make run``: the whole service on this machine, until Ctrl-C or SIGTERM.

    python -m local.run            # the API on http://127.0.0.1:8000

Starts ``local.stack.LocalStack`` (options and environment variables: ``StackOptions.from_env``),
runs ``python -m local.seed`` when that module exists (its output and the containers' output
meanwhile go to the log files only), then prints every address it serves and the demo
properties' live models, ending with a line that starts ``Ready``; from then on it logs
each request with the container that served it (to stderr and ``.run/logs/runner.log``); the
containers' own output goes to ``.run/logs/<Function>-<id>.log`` and, unless
``LOCAL_CONTAINER_LOGS=0``, to stderr prefixed with ``[<Function> <container id>]``.
Ctrl-C or SIGTERM stops the API, the containers, Prometheus, the Pushgateway and moto, in that
order, and removes ``.run/state.json``. Containers are retired as Lambda shuts down an execution
environment (SIGTERM to the runtime, SHUTDOWN to the extensions, SIGKILL after
``LOCAL_SHUTDOWN_BUDGET_MS``), on exit and whenever one has been idle ``LOCAL_IDLE_SECONDS``.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from local.container import ContainerError
from local.services import ServiceError
from local.stack import LocalStack, StackOptions, running_state
from local.template import TemplateError

log = logging.getLogger("local.run")


class Hushable:
    """A text stream that drops what is written while ``hushed`` (the log files still get it):
    the seeding's requests and container logs would otherwise bury the banner."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.hushed = False

    def write(self, text: str) -> int:
        return len(text) if self.hushed else self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def banner(stack: LocalStack, seeded) -> list[str]:
    """The lines printed once the stack and its demo data are ready."""
    width = max(len(what) for what, _, _ in stack.addresses())
    lines = ["", "Serving (Ctrl-C stops everything):"]
    lines += [f"  {what:<{width}}  {url}    {detail}" for what, url, detail in stack.addresses()]
    if seeded is not None:
        lines += ["", f"Demo data ({seeded.seconds:.0f} s, log {seeded.log_path}):"]
        for s in seeded.summaries:
            lines.append(
                f"  {s['property_id']:<13} live model {s['live_version'] or 'none'}  "
                f"(outcomes stored {s['stored']}, {s['duplicates']} already there; retrain {s['retrain']})"
            )
    live = [s["property_id"] for s in (seeded.summaries if seeded else []) if s["live_version"]]
    lines.append("")
    if live:
        lines.append(f"Ready: /score for {', '.join(live)} prices with ml_elasticity; any other property by rules.")
    else:
        lines.append("Ready (without demo models): every property prices by rules.")
    return lines + [""]


def main(argv: Sequence[str] | None = None) -> int:
    options = StackOptions.from_env(os.environ)
    # LOCAL_CONTAINER_LOGS=0 keeps the containers' output in their log files only.
    echo = Hushable(sys.stderr)
    if os.environ.get("LOCAL_CONTAINER_LOGS", "1").lower() not in ("0", "false", "no", "off"):
        options.echo = echo
    (options.run_dir / "logs").mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(echo), logging.FileHandler(options.run_dir / "logs" / "runner.log")]
    for handler in handlers:
        handler.setFormatter(formatter)
    logging.basicConfig(level=logging.INFO, handlers=handlers)

    other = running_state(options.state_file) if options.state_file else None
    if other and other.get("pid") != os.getpid():
        print(f"make run is already up (pid {other['pid']}) at {other['api_url']}", file=sys.stderr)
        return 1

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    stack = LocalStack(options)
    try:
        stack.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            log.error("cannot start: port %d is taken (PORT=... picks another)", options.port)
        else:
            log.error("cannot start: %s", exc)
        return 1
    except (ServiceError, ContainerError, TemplateError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    try:
        print(f"Seeding the demo properties (under a minute; log in {stack.log_dir / 'seed.log'}) ...", file=sys.stderr, flush=True)
        echo.hushed = True
        try:
            seeded = stack.seed()
        finally:
            echo.hushed = False
        if seeded is not None and not seeded.ok:
            log.warning("demo seeding failed (see %s); the service runs without demo data", seeded.log_path)
        if not stop.is_set():
            print("\n".join(banner(stack, seeded)), flush=True)
        stop.wait()
        log.info("stopping")
    finally:
        stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
