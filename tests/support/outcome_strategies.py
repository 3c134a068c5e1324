"""Hypothesis strategies over the /learn outcome schema, and a JSON writer for what they draw.

Every field is drawn either from its valid values or from anything JSON can carry there: other
types, numbers at the float and DynamoDB limits (5e-324, 1e-130 and its neighbours, 1e126,
1.8e308, integers of hundreds of digits, literals of more digits than a double holds, 1e999),
and text of every Unicode plane, lone surrogates included (sent as JSON escapes).

``to_json`` writes the drawn value as JSON text: ``Raw`` numbers are written as their literal
(so ``1e999`` reaches the parser, which reads it as infinity), strings with ASCII escapes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st


@dataclass(frozen=True)
class Raw:
    """A JSON number literal written as is."""

    text: str


def to_json(value) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)  # finite doubles only: repr is valid JSON (1e-05, 1.7976931348623157e+308)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=True)
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=True) + ":" + to_json(v) for k, v in value.items()) + "}"
    raise TypeError(type(value))


EDGE_FLOATS = [
    5e-324,
    2.2250738585072014e-308,
    1e-300,
    1e-131,
    math.nextafter(1e-130, 0),
    1e-130,
    math.nextafter(1e-130, 1),
    1e-100,
    0.001,
    0.01,
    1e10,
    math.nextafter(1e10, math.inf),
    1e125,
    math.nextafter(1e126, 0),
    1e126,
    1e127,
    1e200,
    1e308,
    1.7976931348623157e308,
    0.0,
    -0.0,
]
EDGE_LITERALS = [
    "1e999",
    "-1e999",
    "1e-400",
    "-1e-400",
    "9" * 38,
    "9" * 39,
    "1" + "0" * 127,
    "1" + "0" * 399,
    "120.000000000000000000000000000000000000000000001",
    "0." + "0" * 129 + "1",
    "99999999999999999999999999999999999999.5",
    "1E126",
    "9.9999999999999999999999999999999999999E+125",
]


def _signed(values):
    return [v for x in values for v in (x, -x)]


numbers = st.one_of(
    st.sampled_from(_signed(EDGE_FLOATS)),
    st.sampled_from([Raw(t) for t in EDGE_LITERALS] + [Raw("-" + t) for t in EDGE_LITERALS if not t.startswith("-")]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=0.01, max_value=1e4),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.integers(min_value=-5, max_value=1000),
)

# Every plane (0-16), each drawn as likely as the Basic Multilingual Plane, and lone surrogates.
characters = st.one_of(
    st.characters(),
    st.integers(min_value=0, max_value=16).flatmap(
        lambda plane: st.characters(min_codepoint=plane * 0x10000, max_codepoint=plane * 0x10000 + 0xFFFF)
    ),
    st.characters(categories=["Cs"]),
)
texts = st.text(characters, max_size=40)
long_texts = st.integers(min_value=250, max_value=260).flatmap(
    lambda n: st.text(st.sampled_from(["q", "é", "€", "\U0001f600", "\U0010fffd"]), min_size=n, max_size=n)
)

json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=8,
)

NOW = datetime.now(UTC)


def _stamp(minutes_ago: int) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


property_ids = st.one_of(
    st.sampled_from(["prop-a", "prop-b", "h.1", "x:y_z-0", "..", ".", "", "p" * 128, "p" * 129, "bad id"]),
    st.from_regex(r"[A-Za-z0-9_.:-]{1,128}", fullmatch=True),
    texts,
    json_values,
)
timestamps = st.one_of(
    st.integers(min_value=10, max_value=60 * 24 * 700).map(_stamp),  # well inside 2 years, not future
    st.integers(min_value=60 * 24 * 740, max_value=60 * 24 * 3650).map(_stamp),  # too old
    st.integers(min_value=-60 * 24 * 30, max_value=-10).map(_stamp),  # in the future
    st.sampled_from(
        [
            "2026-02-30T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59-23:59",
            "２０２６-11-26T10:00:00Z",
            "2026-11-26T10:00:00",
            "yesterday",
        ]
    ),
    texts,
    json_values,
)
prices = st.one_of(st.floats(min_value=0.01, max_value=5000.0), numbers, json_values)
quote_ids = st.one_of(
    st.sampled_from([f"pool-{i}" for i in range(6)]),  # shared across items and examples: duplicates
    st.uuids().map(str),
    # At the key's byte limit: 1,022 bytes fit, 1,024 (256 four-byte characters) do not.
    st.sampled_from(["\U0001f600" * 256, "€€" + "\U0001f600" * 254, "\U0010fffd" * 255 + "ab", "é" * 256]),
    texts,
    long_texts,
    json_values,
)
stay_dates = st.one_of(
    st.integers(min_value=0, max_value=60).map(lambda d: (NOW + timedelta(days=d)).date().isoformat()),
    st.sampled_from(["2026-02-30", "2026-12-1", "٢٠٢٦-١٢-٠١"]),
    texts,
    json_values,
)
contexts = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "occupancy": st.one_of(st.floats(0, 2), numbers),
            "day_of_week": st.one_of(st.integers(0, 6), numbers),
            "los": st.one_of(st.integers(1, 365), numbers),
            "refundable": st.one_of(st.booleans(), json_values),
            "lead_days": st.one_of(st.integers(0, 730), numbers),
            "season": texts,
            "notes": st.one_of(texts, long_texts),
        },
    ),
    st.dictionaries(texts, json_values, max_size=4),
    json_values,
)
attributions = st.one_of(st.sampled_from(["exp-1", "control", "treatment"]), texts, long_texts, json_values)

outcomes = st.fixed_dictionaries(
    {},
    optional={
        "property_id": property_ids,
        "timestamp": timestamps,
        "quoted_price": prices,
        "accepted": st.one_of(st.booleans(), json_values),
        "quote_id": quote_ids,
        "final_price": prices,
        "time_to_book": st.one_of(st.floats(min_value=0, max_value=1e4), numbers, json_values),
        "stay_date": stay_dates,
        "comp_p10": prices,
        "comp_p50": prices,
        "comp_p90": prices,
        "context": contexts,
        "experiment_id": attributions,
        "variant": attributions,
    },
)
# Mostly well-formed outcomes (all required fields valid, others drawn), so valid items are common.
likely_valid = st.fixed_dictionaries(
    {
        "property_id": st.sampled_from(["prop-a", "prop-b", "h.1"]),
        "timestamp": st.integers(min_value=10, max_value=60 * 24 * 300).map(_stamp),
        "quoted_price": st.one_of(st.floats(min_value=0.01, max_value=5000.0), numbers),
        "accepted": st.booleans(),
    },
    optional={
        "quote_id": quote_ids,
        "final_price": prices,
        "time_to_book": st.one_of(st.floats(0, 1e4), numbers),
        "stay_date": stay_dates,
        "comp_p50": prices,
        "context": contexts,
        "experiment_id": attributions,
        "variant": attributions,
    },
)
# Valid in every field, optional ones included (so much of each batch is stored).
valid_outcomes = st.fixed_dictionaries(
    {
        "property_id": st.one_of(st.sampled_from(["prop-a", "prop-b", "h.1"]), st.from_regex(r"[a-z0-9.]{0,5}[a-z]", fullmatch=True)),
        "timestamp": st.integers(min_value=10, max_value=60 * 24 * 300).map(_stamp),
        "quoted_price": st.floats(min_value=0.01, max_value=1e10),
        "accepted": st.booleans(),
    },
    optional={
        "quote_id": st.one_of(
            st.sampled_from([f"pool-{i}" for i in range(6)]),
            st.uuids().map(str),
            st.uuids().map(str),
            st.text(st.characters(categories=["L", "N", "S"]), min_size=1, max_size=256),
        ),
        "final_price": st.floats(min_value=0.01, max_value=1e10),
        "time_to_book": st.one_of(st.floats(min_value=0, max_value=1e125), st.integers(0, 10**100)),
        "stay_date": st.integers(min_value=0, max_value=60).map(lambda d: (NOW + timedelta(days=d)).date().isoformat()),
        "comp_p50": st.floats(min_value=1e-130, max_value=1e10),
        "context": st.dictionaries(texts, json_values, max_size=3).filter(
            lambda c: not {"occupancy", "day_of_week", "los", "refundable", "lead_days"} & set(c)
        ),
        "experiment_id": st.sampled_from(["exp-1", "exp.2"]),
        "variant": st.sampled_from(["control", "treatment"]),
    },
)
FIELDS = [
    "property_id",
    "timestamp",
    "quoted_price",
    "accepted",
    "quote_id",
    "final_price",
    "time_to_book",
    "stay_date",
    "comp_p10",
    "comp_p50",
    "comp_p90",
    "context",
    "experiment_id",
    "variant",
]
HOSTILE = {
    "property_id": property_ids,
    "timestamp": timestamps,
    "quoted_price": prices,
    "quote_id": quote_ids,
    "final_price": prices,
    "time_to_book": numbers,
    "stay_date": stay_dates,
    "comp_p10": prices,
    "comp_p50": prices,
    "comp_p90": prices,
    "context": contexts,
    "experiment_id": attributions,
    "variant": attributions,
    "accepted": json_values,
}


@st.composite
def one_field_hostile(draw):
    """A valid outcome with one field drawn from anything: each check is met on its own."""
    item = dict(draw(valid_outcomes))
    name = draw(st.sampled_from(FIELDS))
    item[name] = draw(HOSTILE[name])
    return item


items = st.one_of(valid_outcomes, one_field_hostile(), likely_valid, outcomes, json_values)
batches = st.lists(items, min_size=1, max_size=8)
