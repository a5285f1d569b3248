"""Hypothesis strategies shared by the fuzz tests: hostile bytes, JSON of any shape, almost-right bodies.

Random bytes alone rarely get past a JSON parser, so most generated inputs are *nearly* valid: the
right keys with wrong types, right values in the wrong place, valid documents cut short. That is where
parsers break.
"""

from __future__ import annotations

import datetime
import json
from email.utils import format_datetime
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

__all__ = [
    "FUZZ",
    "almost_json",
    "any_json",
    "bodies_around",
    "http_dates",
    "retry_after_values",
    "text_or_bytes",
]

FUZZ = settings(max_examples=300, deadline=None)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["true", "false", "TRUE", " True ", "yes", "", "0", "null"])
)
any_json: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=25,
)


def _dump(value: Any) -> bytes:
    """JSON as Python writes it, including the NaN / Infinity tokens that strict parsers reject."""
    return json.dumps(value, allow_nan=True).encode()


def bodies_around(shape: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    """A well-formed body of `shape`, the same cut short or with noise appended, or any JSON at all."""
    whole = shape.map(_dump)
    cut = st.tuples(whole, st.integers(min_value=0, max_value=200)).map(lambda pair: pair[0][: pair[1]])
    noisy = st.tuples(whole, st.binary(max_size=8)).map(lambda pair: pair[0] + pair[1])
    return whole | cut | noisy | any_json.map(_dump) | st.binary(max_size=200)


def almost_json(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with some of `keys` (plausible values or anything) plus stray keys."""
    loose = {name: strategy | any_json for name, strategy in keys.items()}
    return st.fixed_dictionaries({}, optional=loose).flatmap(
        lambda base: st.dictionaries(st.text(max_size=10), any_json, max_size=2).map(
            lambda extra: {**extra, **base}
        )
    )


http_dates = st.datetimes(timezones=st.just(datetime.UTC)).map(
    lambda moment: format_datetime(moment, usegmt=True)
)
retry_after_values = (
    st.none()
    | st.text(max_size=40)
    | st.integers(min_value=-(10**30), max_value=10**30).map(str)
    | st.floats(allow_nan=True, allow_infinity=True).map(repr)
    | http_dates
    | st.datetimes().map(lambda moment: moment.strftime("%a, %d %b %Y %H:%M:%S"))
)
text_or_bytes = st.text(max_size=300) | st.binary(max_size=300)
