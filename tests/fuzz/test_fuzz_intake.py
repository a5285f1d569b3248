"""Fuzzing what users and producers hand the exporter: queue messages and job-ID files (exporter/intake.py).

Every bad input must end as `InvalidInput` (which the worker dead-letters and the CLI prints with exit
code 2); anything else escaping would leave a message redelivered for ever or a CLI traceback. What is
accepted must be a request the pipeline can run as is.
"""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from fuzz.strategies import FUZZ, almost_json, any_json, bodies_around, text_or_bytes
from hypothesis import event, example, given
from hypothesis import strategies as st

from exporter.errors import InvalidInput
from exporter.intake import parse_batch_message, parse_id_lines, parse_id_list, parse_tags
from exporter.models import MAX_JOB_ID, BatchRequest

MAX_JOBS = 50
job_ids = st.integers(min_value=-5, max_value=MAX_JOB_ID + 5)
well_formed_messages = st.fixed_dictionaries(
    {
        "batch_id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True),
        "project_id": st.from_regex(r"[A-Za-z0-9]{1,64}", fullmatch=True),
        "obs_dir": st.sampled_from(["bucket-a", "obs://bucket-a/exports/", "bucket.b/x/y"]),
        "job_ids": st.lists(st.integers(1, MAX_JOB_ID), min_size=1, max_size=60),
    },
    optional={"chunk_size": st.integers(1, 1000), "campaign": st.text(max_size=20), "version": st.just(1)},
)
messages = bodies_around(well_formed_messages) | bodies_around(
    almost_json(
        {
            "batch_id": st.text(max_size=20),
            "project_id": st.text(max_size=20),
            "obs_dir": st.text(max_size=30),
            "job_ids": st.lists(job_ids, max_size=8),
            "select_all": st.booleans(),
            "filters": almost_json({"status": st.text(max_size=8), "job_type": st.text(max_size=8)}),
            "chunk_size": st.integers(-3, 2000),
            "duplicates_dropped": st.integers(-3, 10),
        }
    )
)


def check_refusal(error: InvalidInput, *, mentions: str = "", field: str | None = None) -> None:
    """A refusal says what was wrong (and where, for ID files), so a person can fix the input."""
    event("InvalidInput")
    text = str(error)
    assert text and mentions in text, f"{mentions!r} not in {text!r}"
    if field is not None:
        assert error.field == field, f"blamed {error.field!r}, expected {field!r}: {text!r}"


def check_message_refusal(error: InvalidInput, *, mentions: str = "", field: str | None = None) -> None:
    """A refused queue message (or body) names the field it blames, so the words and `error.field` agree."""
    check_refusal(error, mentions=mentions, field=field)
    if error.field is not None:
        assert error.field in str(error), f"{error.field!r} blamed but not named in {str(error)!r}"


def check_runnable(request: BatchRequest) -> None:
    """An accepted request names a selection the pipeline can plan, within the limits."""
    assert request.select_all != bool(request.job_ids)
    if request.job_ids is not None:
        assert 1 <= len(request.job_ids) <= MAX_JOBS
        assert len(set(request.job_ids)) == len(request.job_ids), "duplicates dropped at intake"
        assert all(1 <= job_id <= MAX_JOB_ID for job_id in request.job_ids)
    assert 1 <= request.chunk_size <= 1000


@FUZZ
@given(messages | text_or_bytes)
@example(b"\xff\xfe")
@example("[]")
@example('{"batch_id": "a", "project_id": "p", "obs_dir": "bucket-a", "job_ids": [1e999]}')
@example('{"batch_id": "a", "project_id": "p", "obs_dir": "bucket-a", "job_ids": [' + "9" * 5000 + "]}")
def test_queue_message_is_a_request_or_invalid_input(body: str | bytes) -> None:
    """Any message body parses to a runnable BatchRequest or raises InvalidInput, nothing else."""
    try:
        request = parse_batch_message(body, max_jobs=MAX_JOBS)
    except InvalidInput as error:
        check_message_refusal(error)
        return
    event("BatchRequest")
    check_runnable(request)


NORMALISED_OBS_DIRS = {"bucket-a": "bucket-a", "obs://bucket-a/exports/": "bucket-a/exports"}


@FUZZ
@given(well_formed_messages)
def test_well_formed_message_is_the_request_it_says_and_round_trips(data: dict[str, Any]) -> None:
    """A valid message becomes exactly the request it spells (IDs deduplicated in order, defaults filled),
    and that request survives the trip onto the queue and back unchanged (what the worker reads)."""
    unique = list(dict.fromkeys(data["job_ids"]))
    if len(unique) > MAX_JOBS:
        with pytest.raises(InvalidInput) as refused:
            parse_batch_message(json.dumps(data), max_jobs=MAX_JOBS)
        check_message_refusal(refused.value, mentions="EXPORTER_MAX_JOBS_PER_BATCH", field="job_ids")
        return
    request = parse_batch_message(json.dumps(data), max_jobs=MAX_JOBS)
    event("BatchRequest")
    assert (request.batch_id, request.project_id) == (data["batch_id"], data["project_id"])
    assert request.obs_dir == NORMALISED_OBS_DIRS.get(data["obs_dir"], data["obs_dir"])
    assert request.job_ids == unique and request.duplicates_dropped == len(data["job_ids"]) - len(unique)
    assert request.chunk_size == data.get("chunk_size", 100) and request.campaign == data.get("campaign")
    assert not request.select_all and request.filters is None and not request.planned
    assert parse_batch_message(request.model_dump_json(exclude_none=True), max_jobs=MAX_JOBS) == request


# One wrong value per field, each refused by that field's own rule (never coerced into something valid).
BAD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "batch_id": st.sampled_from(["", "-dash-first", "has space", "x" * 129, "ü", 12, None, ["b"]]),
    "project_id": st.sampled_from(["has space", "", "p" * 65, "项目", "a-b", 7, None, {}]),
    "obs_dir": st.sampled_from(["Bad_Bucket", "ab", "192.168.1.1", "bucket/../x", "a..b", "", 5, None]),
    "job_ids": st.sampled_from([[0], [-1], [MAX_JOB_ID + 1], ["abc"], [1.5], "1,2", {}, [None]]),
    "chunk_size": st.sampled_from([0, -1, 1001, 2.5, "lots", None, []]),
    "campaign": st.sampled_from(["c" * 129, 5, [], {}]),
    "select_all": st.sampled_from(["maybe", [], {}, 2]),
    "filters": st.sampled_from(["status=x", 3, [], {"unknown": 1}, {"status": 5}]),
    "duplicates_dropped": st.sampled_from([-1, "some", 1.5]),
    "version": st.sampled_from(["one", 1.5, []]),
    "planned": st.sampled_from(["maybe", [], 3]),
    "jobs": st.sampled_from([-1, "many", 1.5]),
    "unexpected_key": st.just(1),
}


@FUZZ
@given(
    well_formed_messages,
    st.sampled_from(sorted(BAD_VALUES)).flatmap(lambda f: st.tuples(st.just(f), BAD_VALUES[f])),
)
def test_one_bad_field_is_refused_naming_that_field(data: dict[str, Any], bad: tuple[str, Any]) -> None:
    """A valid message with one field made wrong raises InvalidInput that blames, and names, that field."""
    field, value = bad
    with pytest.raises(InvalidInput) as refused:
        parse_batch_message(json.dumps({**data, field: value}), max_jobs=MAX_JOBS)
    check_message_refusal(refused.value, mentions=field, field=field)


id_lines = st.lists(
    st.one_of(
        st.integers(-3, MAX_JOB_ID + 3).map(str),
        st.integers(1, 10**6).map(lambda n: f"  {n}  # a comment"),
        st.sampled_from(["", "   ", "# only a comment", "\t", "0", "00042", "+7", "1,2", "٣", "²"]),
        st.text(alphabet=string.digits, min_size=18, max_size=30),
        st.text(max_size=20),
    ),
    max_size=20,
)


@FUZZ
@given(id_lines)
def test_id_file_yields_valid_ids_or_names_the_bad_line(lines: list[str]) -> None:
    """Every line is an ID in range, blank or a comment; otherwise InvalidInput names the line."""
    try:
        parsed = list(parse_id_lines(lines, source="ids.txt"))
    except InvalidInput as error:
        check_refusal(error, mentions="ids.txt line ")
        return
    event("ids")
    assert all(1 <= job_id <= MAX_JOB_ID for job_id in parsed)
    meaningful = [line.split("#", 1)[0].strip() for line in lines]
    assert parsed == [int(token) for token in meaningful if token]


def _is_job_id(token: str) -> bool:
    return token.isascii() and token.isdigit() and 1 <= int(token) <= MAX_JOB_ID


@FUZZ
@given(st.text(max_size=200) | st.lists(job_ids.map(str), max_size=20).map(", ".join))
def test_id_list_yields_its_ids_or_names_the_first_bad_item(text: str) -> None:
    """`--job-ids` text parses to exactly its IDs, in order, or InvalidInput names the first bad item."""
    tokens = text.replace(",", " ").split()
    bad = [number for number, token in enumerate(tokens, start=1) if not _is_job_id(token)]
    if bad:
        with pytest.raises(InvalidInput) as refused:
            parse_id_list(text)
        check_refusal(refused.value, mentions=f"--job-ids item {bad[0]}:", field="job_ids")
        return
    event("ids")
    assert parse_id_list(text) == [int(token) for token in tokens]


@FUZZ
@given(st.lists(st.text(max_size=20), max_size=6))
def test_tags_are_pairs_or_invalid_input(pairs: list[str]) -> None:
    """`--tags` values become `k=v,...` or raise InvalidInput naming the first bad pair."""
    bad = [pair for pair in pairs if "=" not in pair or not pair.partition("=")[0].strip()]
    if bad:
        with pytest.raises(InvalidInput) as refused:
            parse_tags(pairs)
        check_refusal(refused.value, mentions=repr(bad[0]), field="tags")
        return
    joined = parse_tags(pairs)
    assert (joined is None) == (not pairs)
    assert joined is None or joined.count("=") >= len(pairs)


@FUZZ
@given(any_json)
def test_any_json_value_is_a_request_or_invalid_input(value: object) -> None:
    """Any JSON document at all (array, number, nested objects) is refused with InvalidInput or runnable."""
    try:
        request = parse_batch_message(json.dumps(value), max_jobs=MAX_JOBS)
    except InvalidInput as error:
        check_message_refusal(error)
        return
    check_runnable(request)


HUGE_ID = "9" * 5000


@pytest.mark.parametrize(
    "parse",
    [lambda: list(parse_id_lines([HUGE_ID])), lambda: parse_id_list(HUGE_ID)],
    ids=["ids-file", "job-ids-flag"],
)
def test_absurdly_long_id_is_invalid_input(parse: object) -> None:
    """An ID of 5,000 digits in an ID file or --job-ids is refused as out of range, not a ValueError."""
    assert callable(parse)
    with pytest.raises(InvalidInput):
        parse()


def test_deeply_nested_message_is_invalid_input() -> None:
    """A message nested 100,000 levels deep is refused (dead-lettered), not a RecursionError.

    Otherwise the worker task dies before the poison check, and the message is redelivered for ever.
    """
    with pytest.raises(InvalidInput):
        parse_batch_message("[" * 100_000 + "]" * 100_000)
