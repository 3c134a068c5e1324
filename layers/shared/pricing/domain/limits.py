"""What a value must be to be stored: the stores' limits, checked here, in the pure domain.

Validation is the one gate: anything it lets through is representable by DynamoDB and S3 exactly
as storage writes it. Numbers are IEEE-754 doubles written as their shortest decimal (at most 17
significant digits), so only the magnitude is checked (0, or 1E-130 up to below 1E126:
``storable_number``); keys keep to 2,048 (partition) and 1,024 (sort) bytes of UTF-8, so a quote
id may take 1,022; an id made only of dots is refused (a dot segment in S3 keys and URLs); an
outcome's item stays under ``MAX_OUTCOME_ITEM_BYTES``. Why: README.md ("POST /learn").
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

#: DynamoDB's number range: 0, or a magnitude in [1E-130, 1E126).
DYNAMODB_MIN_MAGNITUDE = Decimal("1E-130")
DYNAMODB_MAX_MAGNITUDE = Decimal("1E126")
DYNAMODB_MAX_DIGITS = 38
MAX_PARTITION_KEY_BYTES = 2048
MAX_SORT_KEY_BYTES = 1024
DYNAMODB_MAX_ITEM_BYTES = 400 * 1024
#: The bound an outcome's stored item keeps to, far under DynamoDB's 400 KB.
MAX_OUTCOME_ITEM_BYTES = 16 * 1024

MAX_PROPERTY_ID_LENGTH = 128
#: 1-128 characters of ``[A-Za-z0-9_.:-]``, at least one of them not a dot. (Pydantic takes this
#: pattern too: no look-arounds, which its regex engine does not have.)
_PROPERTY_ID_BODY = r"[A-Za-z0-9_.:-]*[A-Za-z0-9_:-][A-Za-z0-9_.:-]*"
#: The same as an anchored pattern for Pydantic (whose ``$`` is the end of the text, not of a line).
PROPERTY_ID_PATTERN = f"^{_PROPERTY_ID_BODY}$"
_PROPERTY_ID = re.compile(_PROPERTY_ID_BODY, re.ASCII)


def is_property_id(value: Any) -> bool:
    """A property id: 1-128 of ``[A-Za-z0-9_.:-]``, not only dots (``.``/``..`` are dot segments).

    >>> [is_property_id(v) for v in ("demo-hotel-1", "a.b", ".x", "..", ".", "", "p" * 129, 7)]
    [True, True, True, False, False, False, False, False]
    """
    return isinstance(value, str) and 1 <= len(value) <= MAX_PROPERTY_ID_LENGTH and _PROPERTY_ID.fullmatch(value) is not None


def as_double(value: int | float) -> float | None:
    """``value`` as the double the domain keeps (-0.0 as 0.0), or None when no double holds it.

    >>> as_double(10 ** 400) is None, as_double(-0.0), as_double(12)
    (True, 0.0, 12.0)
    """
    try:
        number = float(value) + 0.0
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def storable_number(value: float) -> bool:
    """Whether DynamoDB stores the double ``value`` as storage writes it (its ``repr``), exactly.

    >>> [storable_number(v) for v in (0.0, 1e-130, 9.999999999999998e125, 1e126, 9.999999999999999e-131, 5e-324, -1e-130)]
    [True, True, True, False, False, False, True]
    """
    if not math.isfinite(value):
        return False
    if value == 0:
        return True
    magnitude = abs(Decimal(repr(value)))
    digits = len(magnitude.as_tuple().digits)
    return DYNAMODB_MIN_MAGNITUDE <= magnitude < DYNAMODB_MAX_MAGNITUDE and digits <= DYNAMODB_MAX_DIGITS


def utf8_length(text: str) -> int | None:
    """Bytes of ``text`` in UTF-8, or None when it cannot be encoded (a lone surrogate)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None
