"""The SAM template as the local stack sees it: functions, routes, resources and their names.

The local runner takes everything from ``template.yaml`` itself -- handlers, timeouts, memory,
environment, API routes, the bucket, tables and queues -- so the local stack and the deployed one
cannot drift apart. CloudFormation's intrinsic functions are resolved the way CloudFormation
would, with parameters at their defaults (or given overrides) and resources at local names:

- ``!Ref`` of a parameter is its value; of a table, bucket or queue its local physical name
  (a queue's ``Ref`` is its URL, on the local AWS endpoint when there is one);
- ``!GetAtt X.Arn`` is the ARN the resource would have in account 123456789012;
- ``!Sub``, ``!If`` (with the template's ``Conditions``), ``!Join``, ``!Select``, ``!Split``,
  ``!FindInMap``, ``!Equals``/``!Not``/``!And``/``!Or`` and ``!Base64`` are evaluated;
  ``AWS::NoValue`` removes the property or list item, as in CloudFormation.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"
LOCAL_STACK_NAME = "pricing-local"

# SAM's defaults when neither the function nor Globals set them.
DEFAULT_TIMEOUT_SECONDS = 3
DEFAULT_MEMORY_MB = 128


class TemplateError(ValueError):
    """The template uses something the local stack cannot resolve or run."""


class _NoValue:
    """``AWS::NoValue``: the property or list item it stands for disappears."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()


# ---------------------------------------------------------------------------------------------
# Loading: YAML with CloudFormation's short-form tags, turned into their long (JSON) form.


class _CfnLoader(yaml.SafeLoader):
    """A SafeLoader that reads ``!Ref x`` as ``{"Ref": "x"}``, ``!Sub s`` as ``{"Fn::Sub": s}``..."""


def _construct_tag(loader: _CfnLoader, tag_suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        # Short form "Resource.Attribute" (attribute names may themselves contain dots).
        resource, _, attribute = value.partition(".")
        value = [resource, attribute]
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: str | Path) -> dict:
    """Parse a CloudFormation/SAM YAML (or JSON) template into plain data in long form.

    Raises:
        TemplateError: the file is not a template (no ``Resources`` mapping).
    """
    text = Path(path).read_text(encoding="utf-8")
    data = yaml.load(text, Loader=_CfnLoader)  # a SafeLoader subclass
    if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
        raise TemplateError(f"{path} is not a CloudFormation template (no Resources)")
    return data


# ---------------------------------------------------------------------------------------------
# What the runner needs from the template.


@dataclass(frozen=True)
class ApiRoute:
    """One ``Api`` event: ``method`` may be ``ANY``; ``path`` may hold ``{name}`` and ``{proxy+}``."""

    function: str
    method: str
    path: str
    api: str = ""  # the RestApiId's logical id (empty: SAM's implicit API)

    def match_path(self, path: str) -> dict[str, str] | None:
        """The path parameters when this route's path matches ``path``; None when it does not."""
        return match_path(self.path, path)


def match_path(template_path: str, path: str) -> dict[str, str] | None:
    """Match an API Gateway resource path (``/items/{id}``, ``/{proxy+}``) against a request path."""
    pattern = ""
    for part in re.split(r"(\{[^}]+\})", template_path.rstrip("/") or "/"):
        if part.startswith("{") and part.endswith("+}"):
            pattern += f"(?P<{_group(part[1:-2])}>.+)"
        elif part.startswith("{") and part.endswith("}"):
            pattern += f"(?P<{_group(part[1:-1])}>[^/]+)"
        else:
            pattern += re.escape(part)
    m = re.fullmatch(pattern + "/?", path)
    if not m:
        return None
    names = re.findall(r"\{([^}+]+)\+?\}", template_path)
    return {name: m.group(_group(name)) for name in names}


def _group(name: str) -> str:
    return "p_" + re.sub(r"\W", "_", name)


@dataclass(frozen=True)
class LambdaFunction:
    """A function as a local container runs it.

    ``code_dir`` plays ``/var/task`` and each of ``layer_dirs`` a layer's ``/opt``; ``environment``
    is the function's own (template Globals and per-function variables, already resolved).
    """

    name: str
    handler: str
    code_dir: Path
    layer_dirs: tuple[Path, ...] = ()
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    memory_mb: int = DEFAULT_MEMORY_MB
    environment: Mapping[str, str] = field(default_factory=dict)
    logical_id: str = ""
    runtime: str = "python3.11"

    @property
    def key(self) -> str:
        """The name ``--env-vars`` files and logs use: the logical id when known."""
        return self.logical_id or self.name


@dataclass(frozen=True)
class LocalResource:
    """A bucket, table or queue to create on the local AWS endpoint."""

    logical_id: str
    type: str
    name: str
    properties: Mapping[str, Any]


class SamTemplate:
    """A loaded SAM template, resolved against parameters and a local AWS endpoint.

    Args:
        path: the template (the source ``template.yaml`` or a ``sam build`` output's).
        parameter_overrides: values for ``Parameters`` (``sam --parameter-overrides``).
        region: ``AWS::Region`` and the region of every ARN.
        endpoint_url: the local AWS endpoint; queue URLs point at it. None: AWS's own URLs.

    Raises:
        TemplateError: unknown parameter, condition, resource or intrinsic function.
    """

    def __init__(
        self,
        path: str | Path,
        parameter_overrides: Mapping[str, str] | None = None,
        region: str = DEFAULT_REGION,
        endpoint_url: str | None = None,
    ) -> None:
        self.path = Path(path).resolve()
        self.data = load_template(self.path)
        self.region = region
        self.endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        self.resources: dict[str, dict] = self.data["Resources"]
        self.parameters = self._parameter_values(parameter_overrides or {})
        self._conditions: dict[str, bool] = {}

    # --- parameters, conditions ---------------------------------------------------------------

    def _parameter_values(self, overrides: Mapping[str, str]) -> dict[str, Any]:
        declared = self.data.get("Parameters") or {}
        unknown = set(overrides) - set(declared)
        if unknown:
            raise TemplateError(f"unknown parameters: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            if name in overrides:
                values[name] = str(overrides[name])
            elif "Default" in spec:
                default = spec["Default"]
                values[name] = default if isinstance(default, list) else str(default)
            else:
                raise TemplateError(f"parameter {name} has no default and no override")
        return values

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self.data.get("Conditions") or {}
            if name not in conditions:
                raise TemplateError(f"unknown condition {name}")
            self._conditions[name] = bool(self.resolve(conditions[name]))
        return self._conditions[name]

    # --- names of resources --------------------------------------------------------------------

    def physical_name(self, logical_id: str) -> str:
        """The local name of a resource: its declared name, else a stable generated one."""
        resource = self._resource(logical_id)
        props = resource.get("Properties") or {}
        name_property = {
            "AWS::DynamoDB::Table": "TableName",
            "AWS::Serverless::SimpleTable": "TableName",
            "AWS::S3::Bucket": "BucketName",
            "AWS::SQS::Queue": "QueueName",
            "AWS::Serverless::Function": "FunctionName",
            "AWS::Lambda::Function": "FunctionName",
            "AWS::Serverless::LayerVersion": "LayerName",
        }.get(resource["Type"])
        if name_property and props.get(name_property) is not None:
            return str(self.resolve(props[name_property]))
        # CloudFormation would generate "<stack>-<logical id>-<random>"; locally the name must be
        # stable across runs (and lower case, which S3 requires).
        generated = f"{LOCAL_STACK_NAME}-{logical_id}"
        return generated.lower() if resource["Type"] == "AWS::S3::Bucket" else generated

    def _resource(self, logical_id: str) -> dict:
        try:
            return self.resources[logical_id]
        except KeyError:
            raise TemplateError(f"unknown resource {logical_id}") from None

    def _ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::StackName": LOCAL_STACK_NAME,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{ACCOUNT_ID}:stack/{LOCAL_STACK_NAME}/local",
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        resource = self._resource(name)
        kind = resource["Type"]
        physical = self.physical_name(name)
        if kind == "AWS::SQS::Queue":
            return self.queue_url(physical)
        if kind in ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion"):
            return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:layer:{physical}:1"
        return physical

    def queue_url(self, queue_name: str) -> str:
        base = self.endpoint_url or f"https://sqs.{self.region}.amazonaws.com"
        return f"{base}/{ACCOUNT_ID}/{queue_name}"

    def _get_att(self, logical_id: str, attribute: str) -> Any:
        kind = self._resource(logical_id)["Type"]
        name = self.physical_name(logical_id)
        r, a = self.region, ACCOUNT_ID
        arns = {
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{r}:{a}:table/{name}",
            "AWS::Serverless::SimpleTable": f"arn:aws:dynamodb:{r}:{a}:table/{name}",
            "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
            "AWS::SQS::Queue": f"arn:aws:sqs:{r}:{a}:{name}",
            "AWS::Serverless::Function": f"arn:aws:lambda:{r}:{a}:function:{name}",
            "AWS::Lambda::Function": f"arn:aws:lambda:{r}:{a}:function:{name}",
        }
        if attribute == "Arn":
            return arns.get(kind, f"arn:aws:local:{r}:{a}:{logical_id}")
        if attribute in ("QueueName", "TableName", "BucketName"):
            return name
        if attribute == "QueueUrl":
            return self.queue_url(name)
        if attribute == "StreamArn":
            return f"{arns.get(kind)}/stream/local"
        if attribute in ("DomainName", "RegionalDomainName"):
            return f"{name}.s3.{r}.amazonaws.com"
        raise TemplateError(f"GetAtt {logical_id}.{attribute} is not supported locally")

    # --- intrinsic functions -------------------------------------------------------------------

    def resolve(self, node: Any) -> Any:
        """Evaluate every intrinsic function in ``node``; ``AWS::NoValue`` items disappear."""
        if isinstance(node, list):
            items = [self.resolve(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Condition":
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self._function(key[4:], arg)
        resolved = {key: self.resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not NO_VALUE}

    def _function(self, name: str, arg: Any) -> Any:
        if name == "Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
            return self._sub(text, variables)
        if name == "GetAtt":
            logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
            return self._get_att(logical_id, self.resolve(attribute))
        if name == "If":
            condition, when_true, when_false = arg
            return self.resolve(when_true if self.condition(condition) else when_false)
        args = self.resolve(arg)
        if name == "Equals":
            return str(args[0]) == str(args[1])
        if name == "Not":
            return not args[0]
        if name == "And":
            return all(args)
        if name == "Or":
            return any(args)
        if name == "Join":
            return str(args[0]).join(str(part) for part in args[1])
        if name == "Select":
            return args[1][int(args[0])]
        if name == "Split":
            return str(args[1]).split(str(args[0]))
        if name == "Base64":
            return base64.b64encode(str(args).encode()).decode()
        if name == "FindInMap":
            return self.data["Mappings"][args[0]][args[1]][args[2]]
        if name == "GetAZs":
            return [f"{self.region}{zone}" for zone in "abc"]
        raise TemplateError(f"Fn::{name} is not supported locally")

    def _sub(self, text: str, variables: Mapping[str, Any]) -> str:
        def replace(m: re.Match) -> str:
            expression = m.group(1)
            if expression.startswith("!"):  # "${!Literal}" is an escaped "${Literal}"
                return "${" + expression[1:] + "}"
            if expression in variables:
                return str(variables[expression])
            if "." in expression and expression.split(".", 1)[0] in self.resources:
                return str(self._get_att(*expression.split(".", 1)))
            return str(self._ref(expression))

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    # --- functions and routes ------------------------------------------------------------------

    def function_ids(self) -> list[str]:
        return [logical_id for logical_id, resource in self.resources.items() if resource.get("Type") == "AWS::Serverless::Function"]

    def _function_properties(self, logical_id: str) -> dict:
        """A function's properties with SAM's Globals merged in (function values win)."""
        resource = self._resource(logical_id)
        if resource.get("Type") != "AWS::Serverless::Function":
            raise TemplateError(f"{logical_id} is not an AWS::Serverless::Function")
        globals_ = ((self.data.get("Globals") or {}).get("Function")) or {}
        own = resource.get("Properties") or {}
        merged = {**globals_, **own}
        # SAM merges maps key by key and concatenates lists (Globals first).
        merged["Layers"] = list(globals_.get("Layers") or []) + list(own.get("Layers") or [])
        variables = {
            **(((globals_.get("Environment") or {}).get("Variables")) or {}),
            **(((own.get("Environment") or {}).get("Variables")) or {}),
        }
        merged["Environment"] = {"Variables": variables}
        return merged

    def environment(self, logical_id: str) -> dict[str, str]:
        """The function's resolved template environment (Globals, then its own variables)."""
        variables = self.resolve(self._function_properties(logical_id)["Environment"]["Variables"])
        return {name: _env_string(value) for name, value in variables.items()}

    def globals_environment(self) -> dict[str, str]:
        """The environment every function shares (``Globals.Function.Environment``)."""
        globals_ = ((self.data.get("Globals") or {}).get("Function")) or {}
        variables = self.resolve(((globals_.get("Environment") or {}).get("Variables")) or {})
        return {name: _env_string(value) for name, value in variables.items()}

    def function(self, logical_id: str, build_dir: str | Path | None = None) -> LambdaFunction:
        """The function as built by ``sam build`` into ``build_dir`` (default: next to the template).

        Code lives in ``<build_dir>/<LogicalId>`` after a build; without ``build_dir`` the
        template's own ``CodeUri`` is used (how a built template points at its artifacts).
        Layers are the template's layers, each in ``<build_dir>/<LayerLogicalId>``.

        Raises:
            TemplateError: not a function, a non-Python runtime, or a layer that is no resource.
        """
        props = self._function_properties(logical_id)
        runtime = str(self.resolve(props.get("Runtime", "python3.11")))
        if not runtime.startswith("python"):
            raise TemplateError(f"{logical_id}: runtime {runtime} cannot run locally (Python only)")
        base = Path(build_dir).resolve() if build_dir else self.path.parent
        code_dir = base / logical_id if build_dir else base / str(self.resolve(props.get("CodeUri", ".")))
        layer_dirs = []
        for layer in props["Layers"]:
            if not (isinstance(layer, dict) and "Ref" in layer and layer["Ref"] in self.resources):
                raise TemplateError(f"{logical_id}: layer {layer!r} is not a layer of this template")
            layer_id = layer["Ref"]
            if build_dir:
                layer_dirs.append(base / layer_id)
            else:
                content = (self.resources[layer_id].get("Properties") or {}).get("ContentUri", ".")
                layer_dirs.append(base / str(self.resolve(content)))
        return LambdaFunction(
            name=self.physical_name(logical_id),
            handler=str(self.resolve(props["Handler"])),
            code_dir=code_dir,
            layer_dirs=tuple(layer_dirs),
            timeout=float(self.resolve(props.get("Timeout", DEFAULT_TIMEOUT_SECONDS))),
            memory_mb=int(self.resolve(props.get("MemorySize", DEFAULT_MEMORY_MB))),
            environment=self.environment(logical_id),
            logical_id=logical_id,
            runtime=runtime,
        )

    def api_routes(self) -> list[ApiRoute]:
        """Every ``Api`` event of every function, most specific paths first."""
        routes = []
        for logical_id in self.function_ids():
            events = (self.resources[logical_id].get("Properties") or {}).get("Events") or {}
            for event in events.values():
                if event.get("Type") != "Api":
                    continue
                props = self.resolve(event.get("Properties") or {})
                method = str(props.get("Method", "ANY")).upper()
                api = (event.get("Properties") or {}).get("RestApiId")
                api_id = api.get("Ref", "") if isinstance(api, dict) else ""
                routes.append(ApiRoute(logical_id, "ANY" if method == "ANY" else method, props["Path"], api_id))
        # Literal segments beat {params}, which beat {proxy+}, as in API Gateway.
        return sorted(routes, key=lambda r: (r.path.count("+}"), r.path.count("{"), -len(r.path)))

    def api_stage(self) -> str:
        """The REST API's stage name (SAM's implicit API uses ``Prod``)."""
        for resource in self.resources.values():
            if resource.get("Type") == "AWS::Serverless::Api":
                return str(self.resolve((resource.get("Properties") or {}).get("StageName", "Prod")))
        return "Prod"

    def local_resources(
        self,
        kinds: Iterable[str] = (
            "AWS::S3::Bucket",
            "AWS::DynamoDB::Table",
            "AWS::Serverless::SimpleTable",
            "AWS::SQS::Queue",
        ),
    ) -> list[LocalResource]:
        """The buckets, tables and queues to create locally, with resolved properties."""
        wanted = set(kinds)
        out = []
        for logical_id, resource in self.resources.items():
            if resource.get("Type") not in wanted:
                continue
            if "Condition" in resource and not self.condition(resource["Condition"]):
                continue
            out.append(
                LocalResource(
                    logical_id=logical_id,
                    type=resource["Type"],
                    name=self.physical_name(logical_id),
                    properties=self.resolve(resource.get("Properties") or {}),
                )
            )
        return out

    def resource_names(self) -> dict[str, str]:
        """Logical id -> local physical name of every bucket, table and queue."""
        return {r.logical_id: r.name for r in self.local_resources()}


def _env_string(value: Any) -> str:
    """Lambda environment values are strings; CloudFormation stringifies numbers and booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return "" if value is None else str(value)
