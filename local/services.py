"""The local stand-ins for AWS and the Prometheus stack, each a child process on 127.0.0.1.

- ``MotoServer``: moto's server mode for S3, DynamoDB, SQS (and anything else boto3 asks it);
  ``create_resources`` makes the template's bucket, tables and queues there from their own
  definitions (key schemas, indexes, versioning, redrive policies), so local and deployed agree.
- ``Pushgateway`` and ``Prometheus``: the pinned stack's ``prometheus-pushgateway`` and
  ``prometheus`` (``local.prometheus_stack``: ``.tools/prometheus-stack/bin``, installed by
  ``make setup``); Prometheus runs with created-timestamp zero ingestion and scrapes the
  Pushgateway in protobuf with ``honor_labels: true`` (the pushed ``job`` and ``instance`` labels
  must survive the scrape).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import yaml

from local import prometheus_stack
from local.template import DEFAULT_REGION, LocalResource

log = logging.getLogger("local.services")


class ServiceError(RuntimeError):
    """A local service did not start (binary missing, port taken, not ready in time)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def preferred_port(port: int, what: str, host: str = "127.0.0.1") -> int:
    """``port`` when it is free, else a free one (saying so). 0 means any free port."""
    if port and not port_in_use(port, host):
        return port
    chosen = free_port(host)
    if port:
        log.warning("%s: port %d is taken, using %d instead", what, port, chosen)
    return chosen


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # our own URL
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


class ManagedProcess:
    """A child service process with a readiness URL, stopped with SIGTERM then SIGKILL."""

    name = "service"

    def __init__(
        self,
        argv: Sequence[str],
        ready_url: str,
        *,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        ready_timeout: float = 30.0,
        stop_timeout: float = 5.0,
    ) -> None:
        """``stop_timeout``: how long SIGTERM is given before SIGKILL (a Pushgateway writing a
        large persistence file at shutdown needs far more than the default)."""
        self.argv = list(argv)
        self.ready_url = ready_url
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen | None = None
        self._log_file: IO[bytes] | None = None

    def start(self) -> ManagedProcess:
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        out = self._log_file or subprocess.DEVNULL
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=self.env, cwd=self.cwd, start_new_session=True
        )
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise ServiceError(
                    f"{self.name} exited with {self.process.returncode} at start" + (f"; see {self.log_path}" if self.log_path else "")
                )
            if http_ok(self.ready_url, timeout=0.5):
                return self
            time.sleep(0.1)
        self.stop()
        raise ServiceError(f"{self.name} not ready at {self.ready_url} within {self.ready_timeout:.0f} s")

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MotoServer(ManagedProcess):
    """moto in server mode: one endpoint for every AWS service boto3 calls."""

    name = "moto server"

    def __init__(self, port: int = 0, *, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        # local.moto_server: moto with DynamoDB's item writes atomic, as DynamoDB's are.
        super().__init__(
            [sys.executable, "-m", "local.moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
            f"{self.url}/moto-api/data.json",
            log_path=log_path,
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
        )


class Pushgateway(ManagedProcess):
    """The pinned stack's Prometheus Pushgateway (binary ``prometheus-pushgateway``)."""

    name = "Pushgateway"
    binary = prometheus_stack.PUSHGATEWAY

    def __init__(self, port: int = 0, *, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Debian's build persists to one machine-wide file by default; an empty path keeps each
        # local Pushgateway's groups its own (and gone when it stops).
        super().__init__(
            [
                _binary(self.binary),
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--persistence.file=",
                *prometheus_stack.PUSHGATEWAY_FLAGS,
            ],
            f"{self.url}/-/ready",
            log_path=log_path,
        )

    @classmethod
    def available(cls) -> bool:
        return prometheus_stack.find(cls.binary) is not None


class Prometheus(ManagedProcess):
    """The pinned stack's Prometheus with a given config, its data in ``data_dir``.

    With created-timestamp zero ingestion: a counter scraped with its created timestamp (protobuf)
    gets a zero at that time, so a new series' first counts are seen by increase() and rate().
    """

    name = "Prometheus"
    binary = prometheus_stack.PROMETHEUS

    def __init__(self, config: Path, data_dir: Path, port: int = 0, *, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            [
                _binary(self.binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                *prometheus_stack.PROMETHEUS_FLAGS,
            ],
            f"{self.url}/-/ready",
            log_path=log_path,
            ready_timeout=60.0,
        )

    @classmethod
    def available(cls) -> bool:
        return prometheus_stack.find(cls.binary) is not None


def _binary(name: str) -> str:
    try:
        return prometheus_stack.require(name)
    except prometheus_stack.StackMissing as exc:
        raise ServiceError(str(exc)) from None


def _pushgateway_job(pushgateway: str, job: dict | None = None) -> dict:
    """``job`` (or a new one) scraping the Pushgateway at ``pushgateway`` as Lambda needs it."""
    job = dict(job or {"job_name": "pushgateway"})
    job["honor_labels"] = True
    # Created timestamps travel only in protobuf: without it Prometheus cannot put a new series'
    # zero at its start, and increase()/rate() miss its first pushed counts.
    job["scrape_protocols"] = list(prometheus_stack.PUSHGATEWAY_SCRAPE_PROTOCOLS)
    job["static_configs"] = [{"targets": [pushgateway]}]
    return job


def prometheus_config(pushgateway: str, *, base: Path | None = None, rule_files: Sequence[Path] = (), scrape_interval: str = "5s") -> dict:
    """A Prometheus config scraping the Pushgateway at ``pushgateway`` (``host:port``).

    With ``base`` (the project's ``observability/prometheus.yml``) its rules, alerting and jobs
    are kept; every job that scrapes a Pushgateway is pointed at ``pushgateway``, with
    ``honor_labels: true`` and protobuf first in ``scrape_protocols`` (its relabelling kept), the
    ``prometheus`` job at Prometheus itself, and relative ``rule_files`` are made absolute (the
    written config lives elsewhere). Without it: a Pushgateway job, Prometheus' own, and
    ``rule_files``.
    """
    if base is None or not base.is_file():
        return {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "rule_files": [str(Path(p).resolve()) for p in rule_files],
            "scrape_configs": [
                _pushgateway_job(pushgateway),
                {"job_name": "prometheus", "static_configs": [{"targets": ["__PROMETHEUS__"]}]},
            ],
        }
    config = yaml.safe_load(base.read_text()) or {}
    # The base config names the docker-compose Alertmanager; locally there is none to send to,
    # and alerts stay visible on Prometheus's own /alerts page.
    config.pop("alerting", None)
    config.pop("remote_write", None)  # the same for the docker-compose VictoriaMetrics
    config["rule_files"] = [
        str(path if Path(path).is_absolute() else (base.parent / path).resolve()) for path in config.get("rule_files") or []
    ]
    found = False
    jobs = config.get("scrape_configs") or []
    for i, job in enumerate(jobs):
        targets = [t for sc in job.get("static_configs") or [] for t in sc.get("targets") or []]
        if "pushgateway" in str(job.get("job_name", "")).lower() or any("9091" in t for t in targets):
            jobs[i] = _pushgateway_job(pushgateway, job)
            found = True
        elif job.get("job_name") == "prometheus":  # itself, wherever it listens this time
            job["static_configs"] = [{"targets": ["__PROMETHEUS__"]}]
    if not found:
        jobs.append(_pushgateway_job(pushgateway))
    config["scrape_configs"] = jobs
    return config


def write_prometheus_config(path: Path, pushgateway: str, prometheus: str, base: Path | None, rule_files: Sequence[Path] = ()) -> Path:
    config = prometheus_config(pushgateway, base=base, rule_files=rule_files)
    text = yaml.safe_dump(config, sort_keys=False).replace("__PROMETHEUS__", prometheus)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# Resources from the template.


def aws_client(service: str, endpoint_url: str, region: str = DEFAULT_REGION) -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_session_token="testing",
    )


def create_resources(resources: Iterable[LocalResource], endpoint_url: str, region: str = DEFAULT_REGION) -> list[str]:
    """Create the template's buckets, tables and queues on ``endpoint_url``; existing ones stay.

    Queues without a redrive policy go first, so a dead-letter queue exists before the queue
    that names it. Returns the names created or found.
    """
    resources = list(resources)
    done = []
    queues = sorted((r for r in resources if r.type == "AWS::SQS::Queue"), key=lambda r: "RedrivePolicy" in r.properties)
    for resource in [r for r in resources if r.type != "AWS::SQS::Queue"] + queues:
        creator = {
            "AWS::S3::Bucket": _create_bucket,
            "AWS::DynamoDB::Table": _create_table,
            "AWS::Serverless::SimpleTable": _create_simple_table,
            "AWS::SQS::Queue": _create_queue,
        }.get(resource.type)
        if creator:
            creator(resource, endpoint_url, region)
            done.append(resource.name)
    return done


def _exists_error(exc: Exception, *codes: str) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code in codes


def _create_bucket(resource: LocalResource, endpoint_url: str, region: str) -> None:
    s3 = aws_client("s3", endpoint_url, region)
    props = resource.properties
    kwargs: dict[str, Any] = {"Bucket": resource.name}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except Exception as exc:
        if not _exists_error(exc, "BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    if (props.get("VersioningConfiguration") or {}).get("Status"):
        s3.put_bucket_versioning(Bucket=resource.name, VersioningConfiguration={"Status": props["VersioningConfiguration"]["Status"]})
    encryption = props.get("BucketEncryption")
    if encryption:
        # CloudFormation spells the rule "ServerSideEncryptionByDefault"; the S3 API "Apply...".
        rules = [
            {("ApplyServerSideEncryptionByDefault" if k == "ServerSideEncryptionByDefault" else k): v for k, v in rule.items()}
            for rule in encryption["ServerSideEncryptionConfiguration"]
        ]
        s3.put_bucket_encryption(Bucket=resource.name, ServerSideEncryptionConfiguration={"Rules": rules})
    if props.get("PublicAccessBlockConfiguration"):
        s3.put_public_access_block(Bucket=resource.name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"])


def _create_table(resource: LocalResource, endpoint_url: str, region: str) -> None:
    dynamodb = aws_client("dynamodb", endpoint_url, region)
    props = resource.properties
    kwargs: dict[str, Any] = {
        "TableName": resource.name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PROVISIONED"),
    }
    if kwargs["BillingMode"] == "PROVISIONED":
        kwargs["ProvisionedThroughput"] = props.get("ProvisionedThroughput", {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5})
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if props.get(key):
            kwargs[key] = [{k: v for k, v in index.items() if k != "ContributorInsightsSpecification"} for index in props[key]]
    if props.get("StreamSpecification"):
        kwargs["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    if props.get("SSESpecification"):
        kwargs["SSESpecification"] = {"Enabled": bool(props["SSESpecification"].get("SSEEnabled"))}
    try:
        dynamodb.create_table(**kwargs)
    except Exception as exc:
        if _exists_error(exc, "ResourceInUseException"):
            return
        raise
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        dynamodb.update_time_to_live(
            TableName=resource.name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]}
        )
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr and pitr.get("PointInTimeRecoveryEnabled"):
        dynamodb.update_continuous_backups(TableName=resource.name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})


def _create_simple_table(resource: LocalResource, endpoint_url: str, region: str) -> None:
    key = resource.properties.get("PrimaryKey") or {"Name": "id", "Type": "String"}
    attribute_type = {"String": "S", "Number": "N", "Binary": "B"}[key.get("Type", "String")]
    table = LocalResource(
        resource.logical_id,
        "AWS::DynamoDB::Table",
        resource.name,
        {
            "AttributeDefinitions": [{"AttributeName": key["Name"], "AttributeType": attribute_type}],
            "KeySchema": [{"AttributeName": key["Name"], "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    _create_table(table, endpoint_url, region)


# CloudFormation property -> SQS attribute, for the properties that are queue attributes.
_QUEUE_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "RedrivePolicy",
    "RedriveAllowPolicy",
)


def _create_queue(resource: LocalResource, endpoint_url: str, region: str) -> None:
    sqs = aws_client("sqs", endpoint_url, region)
    attributes = {}
    for name in _QUEUE_ATTRIBUTES:
        if name in resource.properties:
            value = resource.properties[name]
            if isinstance(value, (dict, list)):
                value = json.dumps(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            attributes[name] = str(value)
    try:
        sqs.create_queue(QueueName=resource.name, Attributes=attributes)
    except Exception as exc:
        if not _exists_error(exc, "QueueAlreadyExists", "QueueNameExists"):
            raise
