"""The model registry (DynamoDB, keys ``(property_id, record)``): each property's configuration,
its model versions, and the LIVE pointer that names the deployed one.

``record = "CONFIG"`` holds the base price; ``"LIVE"`` the deployed version and its artifact;
``"MODEL#<version>"`` one item per version ever trained (immutable but for its status). The index
``RegistryByRecord (record, property_id)`` lists every LIVE pointer by one Query.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pricing.storage.aws import BATCH_GET_LIMIT, AwsClients, Item, Page, Table
from pricing.storage.errors import StoreRefused

CONFIG_RECORD, LIVE_RECORD, MODEL_RECORD_PREFIX = "CONFIG", "LIVE", "MODEL#"
#: Where exploration goes while rules price the property (``pricing.domain.exploration``).
EXPLORE_RECORD = "EXPLORE"
#: The registry by record kind: ``record = "LIVE"`` lists every property's live pointer.
REGISTRY_RECORDS_INDEX = "RegistryByRecord"
_RECORD = {"#r": "record"}  # ``record`` is a DynamoDB reserved word


@dataclass(frozen=True)
class PropertyRecord:
    """What scoring needs to know about a property from the registry."""

    property_id: str
    base_price: float | None = None
    live_version: str | None = None
    artifact_key: str | None = None
    deployed_at: str | None = None  # when LIVE last changed (UTC, ``...Z``)
    # The holdback guard's decision for this live model (``pricing.domain.holdback``): None or
    # ``full`` until it beats rules, then ``maintenance`` from ``holdback_since``. A deploy
    # rewrites LIVE without them: a new model starts at the full share.
    holdback_mode: str | None = None
    holdback_since: str | None = None
    # A refit that replaced a live model without drift keeps comparing against the holdback
    # quotes since the first model of that line went live (``holdback_chain_since``).
    holdback_chain_since: str | None = None
    # The retrain's direction for exploration while rules price (-1 down, 1 up, 0 both), and the
    # LIVE version (None: no LIVE record) and base price it was set under: it applies only while
    # both still hold.
    exploration_direction: int = 0
    exploration_for: str | None = None
    exploration_base: float | None = None

    def exploration_in_force(self) -> int:
        """The recorded direction while LIVE and the base price are still what it was set
        under, else 0 (both sides)."""
        current = self.exploration_for == self.live_version and self.exploration_base == self.base_price
        return self.exploration_direction if current else 0


def _key(property_id: str, record: str) -> dict[str, str]:
    return {"property_id": property_id, "record": record}


def _checked_start(start: Item | None, *, property_id: str | None = None, record: str | None = None) -> Item | None:
    """A page cursor checked against the list it is used for (``StoreRefused`` otherwise):
    DynamoDB refuses a start key of another list, but not every store does, and a page of the
    wrong list is no answer."""
    if start is None:
        return None
    try:
        pid, rec = start["property_id"]["S"], start["record"]["S"]
    except (KeyError, TypeError):
        raise StoreRefused("registry: not a cursor of this list") from None
    if (
        not (isinstance(pid, str) and isinstance(rec, str))
        or (property_id is not None and pid != property_id)
        or (record is not None and rec != record)
        or (property_id is not None and not rec.startswith(MODEL_RECORD_PREFIX))
    ):
        raise StoreRefused("registry: not a cursor of this list")
    return start


class Registry:
    """Read by scoring (``get_property_record``, one BatchGetItem) and the /model routes (pages);
    written by retraining (versions, the LIVE swap, the holdback mode) and seeding (CONFIG)."""

    def __init__(self, aws: AwsClients, table: str):
        self.table = Table(aws, table)

    # -- scoring ------------------------------------------------------------------------------

    def get_property_record(self, property_id: str) -> PropertyRecord:
        keys = [_key(property_id, r) for r in (CONFIG_RECORD, LIVE_RECORD, EXPLORE_RECORD)]
        items = {i["record"]: i for i in self.table.batch_get_once(keys)}
        config, live, explore = items.get(CONFIG_RECORD, {}), items.get(LIVE_RECORD, {}), items.get(EXPLORE_RECORD, {})
        base = config.get("base_price")
        direction = explore.get("direction")
        return PropertyRecord(
            property_id=property_id,
            base_price=float(base) if base is not None else None,
            live_version=live.get("version"),
            artifact_key=live.get("artifact_key"),
            deployed_at=live.get("deployed_at"),
            holdback_mode=live.get("holdback_mode"),
            holdback_since=live.get("holdback_since"),
            holdback_chain_since=live.get("holdback_chain_since"),
            exploration_direction=int(direction) if direction in (-1, 0, 1) else 0,
            exploration_for=explore.get("live_version"),
            exploration_base=float(explore["base_price"]) if explore.get("base_price") is not None else None,
        )

    # -- the /model routes: a page at a time, DynamoDB's LastEvaluatedKey as the cursor -------

    def model_records_page(self, property_id: str, limit: int, start_key: Item | None = None) -> Page:
        """One page of the property's model versions, newest first (versions sort by time)."""
        return self.table.page(
            "query",
            limit,
            _checked_start(start_key, property_id=property_id),
            KeyConditionExpression="property_id = :p AND begins_with(#r, :m)",
            ExpressionAttributeNames=_RECORD,
            values={":p": property_id, ":m": MODEL_RECORD_PREFIX},
            ScanIndexForward=False,
        )

    def live_records_page(self, limit: int, start_key: Item | None = None) -> Page:
        """One page of LIVE pointers (every property with a live model or a rollback to rules),
        from the ``RegistryByRecord`` index (keyed by ``record``: no extra attribute to write,
        and items written before the index existed are in it)."""
        return self.table.page(
            "query",
            limit,
            _checked_start(start_key, record=LIVE_RECORD),
            IndexName=REGISTRY_RECORDS_INDEX,
            KeyConditionExpression="#r = :live",
            ExpressionAttributeNames=_RECORD,
            values={":live": LIVE_RECORD},
        )

    def get_model_record(self, property_id: str, version: str) -> Item | None:
        return self.table.get(_key(property_id, MODEL_RECORD_PREFIX + version))

    def training_outcomes(self, versions: list[tuple[str, str]]) -> int:
        """How many outcomes the given ``(property_id, version)`` models were trained on, summed
        (BatchGetItem of their records, 100 at a time, only the ``outcomes`` attribute)."""
        deadline, total = time.monotonic() + 5.0, 0
        for start in range(0, len(versions), BATCH_GET_LIMIT):
            keys = [_key(p, MODEL_RECORD_PREFIX + v) for p, v in versions[start : start + BATCH_GET_LIMIT]]
            total += sum(int(i.get("outcomes") or 0) for i in self.table.batch_get(keys, deadline, ProjectionExpression="outcomes"))
        return total

    # -- retraining ---------------------------------------------------------------------------

    def list_model_records(self, property_id: str) -> list[Item]:
        return list(
            self.table.query(
                KeyConditionExpression="property_id = :p AND begins_with(#r, :m)",
                ExpressionAttributeNames=_RECORD,
                values={":p": property_id, ":m": MODEL_RECORD_PREFIX},
            )
        )

    def put_model_record(self, property_id: str, version: str, record: Item) -> None:
        """Record a model version (metrics, decision, artifact key). Versions are immutable:
        writing an existing version raises ``ConditionFailed``."""
        self.table.put(
            {**record, **_key(property_id, MODEL_RECORD_PREFIX + version), "version": version},
            ConditionExpression="attribute_not_exists(#r)",
            ExpressionAttributeNames=_RECORD,
        )

    def set_model_status(self, property_id: str, version: str, status: str, reason: str) -> None:
        self.table.update(
            _key(property_id, MODEL_RECORD_PREFIX + version),
            UpdateExpression="SET #s = :s, reason = :r",
            ExpressionAttributeNames={"#s": "status"},
            values={":s": status, ":r": reason},
        )

    def swap_live_model(
        self,
        property_id: str,
        version: str,
        artifact_key: str | None,
        expected_version: str | None,
        deployed_at: str,
        holdback_chain_since: str | None = None,
    ) -> None:
        """Point the property's LIVE record at ``version``, only if it still points at
        ``expected_version`` (None: only if there is no live model yet).

        One conditional write: two concurrent retrains cannot both replace the same incumbent,
        and the pointer only ever names an artifact that was written before it. Raises
        ``ConditionFailed`` when the live model changed since it was read. ``holdback_chain_since``:
        from when the rules holdback's quotes still describe what this model replaced (a refit
        without drift: ``pricing.services.retraining``).
        """
        item = {
            **_key(property_id, LIVE_RECORD),
            "version": version,
            "artifact_key": artifact_key,
            "deployed_at": deployed_at,
            "previous_version": expected_version,
        }
        if holdback_chain_since is not None:
            item["holdback_chain_since"] = holdback_chain_since
        condition: dict[str, Any]
        if expected_version is None:
            condition = {"ConditionExpression": "attribute_not_exists(#r)", "ExpressionAttributeNames": _RECORD}
        else:
            condition = {
                "ConditionExpression": "#v = :expected",
                "ExpressionAttributeNames": {"#v": "version"},
                "values": {":expected": expected_version},
            }
        self.table.put(item, **condition)

    def set_holdback_mode(self, property_id: str, version: str, mode: str, since: str) -> None:
        """Record the holdback guard's decision on the LIVE pointer, only while it still names
        ``version`` (a model deployed meanwhile starts at the full share). ``ConditionFailed``
        otherwise."""
        self.table.update(
            _key(property_id, LIVE_RECORD),
            UpdateExpression="SET holdback_mode = :m, holdback_since = :s",
            ConditionExpression="#v = :v",
            ExpressionAttributeNames={"#v": "version"},
            values={":m": mode, ":s": since, ":v": version},
        )

    def set_exploration_direction(
        self, property_id: str, direction: int, live_version: str | None, base_price: float | None, since: str, version: str
    ) -> None:
        """Where the property's exploration goes while rules price it, as the retrain's refused
        candidate ``version`` would move prices; read with LIVE, applied only while LIVE still
        names ``live_version`` and the configured base price is ``base_price`` (a deploy, a
        rollback or a new base price makes it void without a second write)."""
        self.table.put(
            {
                **_key(property_id, EXPLORE_RECORD),
                "direction": direction,
                "live_version": live_version,
                "base_price": base_price,
                "since": since,
                "candidate_version": version,
            }
        )

    # -- operations and seeding ---------------------------------------------------------------

    def put_property_config(self, property_id: str, base_price: float) -> None:
        self.table.put({**_key(property_id, CONFIG_RECORD), "base_price": base_price})
