"""Booking outcomes: what /learn accepts, how one is checked, keyed and turned into model features.

Each item of a batch becomes an ``Outcome`` or is refused with exactly one reason from
``INVALID_REASONS`` (the first failing check, in that table's order); every value an ``Outcome``
holds is storable as it is (``pricing.domain.limits``). Its key is its ``quote_id`` when it has
one, else a SHA-256 of its normalised content, so a re-sent batch stores nothing twice. The
contract: README.md ("POST /learn").

>>> from datetime import datetime, timezone
>>> now = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
>>> o = validate_outcome({"property_id": "p-1", "timestamp": "2026-11-26T10:00:00Z",
...     "quoted_price": 120.0, "accepted": True, "quote_id": "abc~exp-1~treatment"}, now)
>>> o.key, o.experiment_id, o.variant
('q:abc~exp-1~treatment', 'exp-1', 'treatment')
>>> validate_outcome({"property_id": "p-1"}, now).reason
'missing_field'
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeGuard, cast

from pricing.domain.conversion_model import ModelFeatures
from pricing.domain.experiments import attribution_of
from pricing.domain.guardrails import MAX_PRICE
from pricing.domain.limits import MAX_SORT_KEY_BYTES, as_double, is_property_id, storable_number, utf8_length

MAX_BATCH_OUTCOMES = 10_000
#: Quote timestamps may run ahead of our clock by this much (callers' clocks drift).
FUTURE_SKEW = timedelta(minutes=5)
#: Older outcomes describe a market that no longer exists.
MAX_AGE = timedelta(days=730)
MAX_LEAD_DAYS = 730
MAX_ID_LENGTH = 256
#: An outcome key is ``q:<quote_id>``: the quote id may take the sort key's bytes but the prefix.
QUOTE_KEY_PREFIX = "q:"
MAX_QUOTE_ID_BYTES = MAX_SORT_KEY_BYTES - len(QUOTE_KEY_PREFIX)
#: Context is stored as given (for later features); its size is bounded so one item cannot
#: approach DynamoDB's 400 KB item limit and fail a whole batch write.
MAX_CONTEXT_BYTES = 4096

# Without stay_date/context the model still trains: a missing feature gets one fixed value, so its
# column is constant and the L2 penalty keeps its coefficient at zero (the intercept absorbs it).
DEFAULT_LEAD_DAYS = 14.0
DEFAULT_OCCUPANCY = 0.5
WEEKEND_DAYS = (4, 5)  # Friday and Saturday nights, as the scorer's model_features has it

#: Every reason an outcome can be refused for, in the order the checks run.
INVALID_REASONS: dict[str, str] = {
    "not_an_object": "the item is not a JSON object",
    "missing_field": "property_id, timestamp, quoted_price or accepted is absent or null",
    "invalid_type": "a field has the wrong JSON type (e.g. accepted is not true/false, a price is a string)",
    "invalid_property_id": "property_id is not 1-128 characters of [A-Za-z0-9_.:-], or only dots",
    "invalid_timestamp": "timestamp is not an RFC 3339 date-time with a time zone",
    "future_timestamp": "timestamp is more than 5 minutes in the future",
    "too_old": "timestamp is more than 2 years in the past",
    "non_finite_number": "a number is infinite (e.g. 1e999)",
    "non_positive_price": "quoted_price, final_price or a competitor price is not > 0",
    "negative_time_to_book": "time_to_book is negative",
    "number_out_of_range": "a price above 10^10, or a number DynamoDB cannot hold (magnitude under 1e-130 or from 1e126)",
    "invalid_date": "stay_date is not a YYYY-MM-DD calendar date",
    "invalid_lead_time": "stay_date is before the quote's date or more than 730 days after it",
    "invalid_quote_id": "quote_id is empty, longer than 256 characters or not printable",
    "id_too_long": "quote_id is over 1,022 bytes of UTF-8 (DynamoDB's 1,024-byte key limit)",
    "invalid_attribution": "experiment_id or variant is empty, too long or not printable",
    "invalid_context": "context holds an out-of-range occupancy, day_of_week, los or refundable",
    "context_too_large": "context serialises to more than 4096 bytes",
}
#: The one reason that is not validation's: the store refused an item every check above let
#: through (a store limit they missed). The item is reported and never retried; the rest of the
#: batch is stored. Seen only if validation has a gap: each one is logged as an error.
UNSTORABLE = "unstorable"
STORE_REASONS: dict[str, str] = {UNSTORABLE: "the store refused the item though it passed every check"}

# ASCII digits only: \d would also match other scripts' digits, which fromisoformat may not take.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_PRICES = ("quoted_price", "final_price", "comp_p10", "comp_p50", "comp_p90")


@dataclass(frozen=True)
class Invalid:
    """Why an item was refused (one of ``INVALID_REASONS``) and which field caused it."""

    reason: str
    field: str | None = None


@dataclass(frozen=True)
class Outcome:
    """A checked booking outcome: the quote as answered, and whether it was booked."""

    property_id: str
    timestamp: datetime  # timezone-aware, as sent
    quoted_price: float
    accepted: bool
    quote_id: str | None = None
    final_price: float | None = None
    time_to_book: float | None = None
    stay_date: date | None = None
    comp_p10: float | None = None
    comp_p50: float | None = None
    comp_p90: float | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    experiment_id: str | None = None
    variant: str | None = None

    @property
    def timestamp_utc(self) -> str:
        """The timestamp in UTC with microseconds: sorts as text in time order."""
        return self.timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    @property
    def key(self) -> str:
        """The idempotency key: ``q:<quote_id>``, else ``h:<hash of the normalised content>``."""
        if self.quote_id is not None:
            return QUOTE_KEY_PREFIX + self.quote_id
        canonical = json.dumps(self._content(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return "h:" + hashlib.sha256(canonical.encode()).hexdigest()[:40]

    def _content(self) -> dict[str, Any]:
        return {
            "property_id": self.property_id,
            "timestamp": self.timestamp_utc,
            "quoted_price": self.quoted_price,
            "accepted": self.accepted,
            "quote_id": self.quote_id,
            "final_price": self.final_price,
            "time_to_book": self.time_to_book,
            "stay_date": self.stay_date.isoformat() if self.stay_date else None,
            "comp_p10": self.comp_p10,
            "comp_p50": self.comp_p50,
            "comp_p90": self.comp_p90,
            "context": dict(self.context),
            "experiment_id": self.experiment_id,
            "variant": self.variant,
        }

    def to_record(self) -> dict[str, Any]:
        """The stored form: plain JSON values, absent fields left out, context as JSON text.

        Context is free-form JSON; kept as text it cannot trip DynamoDB's type rules (empty
        sets, numbers beyond 38 digits) and is read back exactly as sent.
        """
        record = {k: v for k, v in self._content().items() if v is not None and k != "context"}
        if self.context:
            record["context"] = json.dumps(dict(self.context), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        record["outcome_key"] = self.key
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Outcome:
        """The outcome a stored record holds (raises KeyError/ValueError when it is not one)."""
        context = record.get("context")
        stay = record.get("stay_date")

        def num(name: str) -> float | None:
            value = record.get(name)
            return None if value is None else float(value)

        return cls(
            property_id=str(record["property_id"]),
            timestamp=_parse_timestamp(str(record["timestamp"])),
            quoted_price=float(record["quoted_price"]),
            accepted=bool(record["accepted"]),
            quote_id=record.get("quote_id"),
            final_price=num("final_price"),
            time_to_book=num("time_to_book"),
            stay_date=date.fromisoformat(stay) if stay else None,
            comp_p10=num("comp_p10"),
            comp_p50=num("comp_p50"),
            comp_p90=num("comp_p90"),
            context=json.loads(context) if isinstance(context, str) else dict(context or {}),
            experiment_id=record.get("experiment_id"),
            variant=record.get("variant"),
        )

    @property
    def lead_days(self) -> float:
        if self.stay_date is not None:
            return float((self.stay_date - self.timestamp.date()).days)
        lead = self.context.get("lead_days")
        return float(lead) if _is_number(lead) else DEFAULT_LEAD_DAYS

    def features(self) -> ModelFeatures:
        """The conversion model's non-price inputs, derived exactly as the scorer derives them
        from a quote (``pricing.domain.pricing.model_features``)."""
        ctx = self.context
        occupancy = ctx.get("occupancy")
        dow = ctx.get("day_of_week")
        if not _is_int(dow):
            dow = self.stay_date.weekday() if self.stay_date is not None else None
        los = ctx.get("los")
        return ModelFeatures(
            lead_days=self.lead_days,
            occupancy=min(float(occupancy), 1.0) if _is_number(occupancy) else DEFAULT_OCCUPANCY,
            weekend=dow in WEEKEND_DAYS,
            refundable=ctx.get("refundable") is True,
            los=int(los) if _is_int(los) else 1,
        )


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _printable_id(value: str) -> bool:
    if not 1 <= len(value) <= MAX_ID_LENGTH or not value.isprintable() or value != value.strip():
        return False
    # Lone surrogates parse from JSON escapes but cannot be stored.
    return utf8_length(value) is not None


def _parse_timestamp(text: str) -> datetime:
    if not _RFC3339.fullmatch(text):
        raise ValueError("not RFC 3339")
    normalised = text.replace("z", "Z").replace("t", "T")
    # fromisoformat takes at most 6 fractional digits; RFC 3339 allows more.
    match = re.match(r"(.*\.\d{6})\d+(.*)", normalised, re.ASCII)
    if match:
        normalised = match.group(1) + match.group(2)
    return datetime.fromisoformat(normalised)


def _check_context(ctx: Mapping[str, Any]) -> str | None:
    occupancy, dow, los, refundable, lead = (ctx.get(k) for k in ("occupancy", "day_of_week", "los", "refundable", "lead_days"))
    if occupancy is not None and not (_is_number(occupancy) and 0.0 <= occupancy <= 2.0):
        return "invalid_context"
    if dow is not None and not (_is_int(dow) and 0 <= dow <= 6):
        return "invalid_context"
    if los is not None and not (_is_int(los) and 1 <= los <= 365):
        return "invalid_context"
    if refundable is not None and not isinstance(refundable, bool):
        return "invalid_context"
    if lead is not None and not (_is_number(lead) and 0 <= lead <= MAX_LEAD_DAYS):
        return "invalid_context"
    try:
        text = json.dumps(dict(ctx), allow_nan=False, separators=(",", ":"), ensure_ascii=True)
    except ValueError:
        return "non_finite_number"
    if len(text) > MAX_CONTEXT_BYTES:
        return "context_too_large"
    return None


def validate_outcome(item: Any, now: datetime) -> Outcome | Invalid:
    """Check one /learn item against the contract; ``now`` is timezone-aware.

    Returns the ``Outcome`` or an ``Invalid`` naming the first failed check (see
    ``INVALID_REASONS`` for the order). Never raises for any JSON value.
    """
    if not isinstance(item, dict):
        return Invalid("not_an_object")
    for name in ("property_id", "timestamp", "quoted_price", "accepted"):
        if item.get(name) is None:
            return Invalid("missing_field", name)

    # Types first, so the value checks below can assume them.
    if not isinstance(item["property_id"], str):
        return Invalid("invalid_type", "property_id")
    if not isinstance(item["timestamp"], str):
        return Invalid("invalid_type", "timestamp")
    if not isinstance(item["accepted"], bool):
        return Invalid("invalid_type", "accepted")
    for name in (*_PRICES, "time_to_book"):
        value = item.get(name)
        if value is not None and not _is_number(value):
            return Invalid("invalid_type", name)
    for name in ("quote_id", "stay_date", "experiment_id", "variant"):
        value = item.get(name)
        if value is not None and not isinstance(value, str):
            return Invalid("invalid_type", name)
    context = item.get("context")
    if context is not None and not isinstance(context, dict):
        return Invalid("invalid_type", "context")

    property_id = item["property_id"]
    if not is_property_id(property_id):
        return Invalid("invalid_property_id", "property_id")
    try:
        timestamp = _parse_timestamp(item["timestamp"])
    except ValueError:
        return Invalid("invalid_timestamp", "timestamp")
    if timestamp > now + FUTURE_SKEW:
        return Invalid("future_timestamp", "timestamp")
    if timestamp < now - MAX_AGE:
        return Invalid("too_old", "timestamp")
    # Integers are finite whatever their size (math.isfinite would raise OverflowError past a
    # double's range); comparisons of ints with floats are exact in Python, never overflow.
    for name in (*_PRICES, "time_to_book"):
        value = item.get(name)
        if value is not None and isinstance(value, float) and not math.isfinite(value):
            return Invalid("non_finite_number", name)
    for name in _PRICES:
        value = item.get(name)
        if value is not None and value <= 0:
            return Invalid("non_positive_price", name)
    if item.get("time_to_book") is not None and item["time_to_book"] < 0:
        return Invalid("negative_time_to_book", "time_to_book")
    numbers: dict[str, float | None] = {}
    for name in (*_PRICES, "time_to_book"):
        value = item.get(name)
        if value is None:
            numbers[name] = None
            continue
        # The double the outcome keeps (see pricing.domain.limits): too big for one, beyond the
        # service's price cap, or outside DynamoDB's number range, it cannot be stored as sent.
        number = as_double(value)
        if number is None or not storable_number(number) or (name in _PRICES and number > MAX_PRICE):
            return Invalid("number_out_of_range", name)
        numbers[name] = number

    stay_date = None
    if item.get("stay_date") is not None:
        text = item["stay_date"]
        try:
            if not _DATE.fullmatch(text):
                raise ValueError(text)
            stay_date = date.fromisoformat(text)
        except ValueError:
            return Invalid("invalid_date", "stay_date")
        if not 0 <= (stay_date - timestamp.date()).days <= MAX_LEAD_DAYS:
            return Invalid("invalid_lead_time", "stay_date")

    quote_id = item.get("quote_id")
    if quote_id is not None and not _printable_id(quote_id):
        return Invalid("invalid_quote_id", "quote_id")
    if quote_id is not None and (utf8_length(quote_id) or 0) > MAX_QUOTE_ID_BYTES:  # encodable: checked above
        return Invalid("id_too_long", "quote_id")
    for name in ("experiment_id", "variant"):
        value = item.get(name)
        if value is not None and not _printable_id(value):
            return Invalid("invalid_attribution", name)
    if context is not None:
        problem = _check_context(context)
        if problem is not None:
            return Invalid(problem, "context")

    # The quote's own attribution wins over what the caller says: the quote id was minted by the
    # scorer at the moment the variant was chosen.
    attribution = attribution_of(quote_id)
    experiment_id = attribution.experiment_id if attribution else item.get("experiment_id")
    variant = attribution.variant if attribution else item.get("variant")

    return Outcome(
        property_id=property_id,
        timestamp=timestamp,
        quoted_price=cast(float, numbers["quoted_price"]),  # a required field: present, checked above
        accepted=item["accepted"],
        quote_id=quote_id,
        final_price=numbers["final_price"],
        time_to_book=numbers["time_to_book"],
        stay_date=stay_date,
        comp_p10=numbers["comp_p10"],
        comp_p50=numbers["comp_p50"],
        comp_p90=numbers["comp_p90"],
        context=dict(context or {}),
        experiment_id=experiment_id,
        variant=variant,
    )


@dataclass(frozen=True)
class CheckedBatch:
    """A /learn batch after item-by-item checks and in-batch de-duplication."""

    outcomes: tuple[tuple[int, Outcome], ...]  # (index in the batch, outcome), first of each key
    invalid: tuple[tuple[int, Invalid, str | None], ...]  # (index, why, property_id if readable)
    in_batch_duplicates: tuple[int, ...]  # indexes repeating an earlier item's key


def check_batch(batch: list[Any], now: datetime) -> CheckedBatch:
    """Validate every item and keep the first of each ``(property_id, key)``.

    A later item with the same key is a duplicate, not an error: the caller sent the same
    outcome twice, and it is stored once either way.
    """
    outcomes: list[tuple[int, Outcome]] = []
    invalid: list[tuple[int, Invalid, str | None]] = []
    duplicates: list[int] = []
    seen: set[tuple[str, str]] = set()
    for index, item in enumerate(batch):
        result = validate_outcome(item, now)
        if isinstance(result, Invalid):
            pid = item.get("property_id") if isinstance(item, dict) else None
            readable = pid if is_property_id(pid) else None
            invalid.append((index, result, readable))
            continue
        identity = (result.property_id, result.key)
        if identity in seen:
            duplicates.append(index)
            continue
        seen.add(identity)
        outcomes.append((index, result))
    return CheckedBatch(tuple(outcomes), tuple(invalid), tuple(duplicates))
