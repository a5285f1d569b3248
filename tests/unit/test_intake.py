"""Input validation: every bad value is refused with a message that says what and where."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.errors import InvalidInput
from exporter.intake import (
    build_request,
    parse_batch_message,
    parse_id_lines,
    parse_id_list,
    parse_tags,
    request_from_flags,
    selected_ids,
)
from exporter.models import check_obs_dir, plan_chunks

GOOD = {"batch_id": "b1", "project_id": "p1", "obs_dir": "bucket", "job_ids": [1]}


def test_ids_file_allows_blanks_and_comments_and_names_bad_line() -> None:
    """Blank lines and # comments are skipped; a bad line is reported with its number."""
    assert list(parse_id_lines(["1", "", "# c", "2 # two"])) == [1, 2]
    with pytest.raises(InvalidInput, match="line 3: 'x7' is not a job ID"):
        list(parse_id_lines(["1", "2", "x7"]))


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "9223372036854775808", "١٢"])
def test_job_id_must_be_a_positive_64_bit_integer(text: str) -> None:
    """Zero, negatives, fractions, values beyond int64 and non-ASCII digits are refused."""
    with pytest.raises(InvalidInput):
        parse_id_list(text)


def test_duplicates_are_removed_and_counted() -> None:
    """Repeated IDs keep their first position and are counted as dropped."""
    request = build_request({**GOOD, "job_ids": [3, 1, 3, 2, 1]})
    assert request.job_ids == [3, 1, 2] and request.duplicates_dropped == 2


@pytest.mark.parametrize(
    ("obs_dir", "reason"),
    [
        ("ab", "3 to 63"),
        ("Bucket", "lowercase"),
        ("192.168.1.1", "IP address"),
        ("a..b", "'..'"),
        ("bucket/pre//fix", "'//'"),
        ("bucket/../x", "'..' segments"),
        ("-bucket", "start and end"),
    ],
)
def test_bucket_and_prefix_rules(obs_dir: str, reason: str) -> None:
    """Each OBS naming rule has its own message."""
    with pytest.raises(ValueError, match=reason):
        check_obs_dir(obs_dir)


def test_obs_dir_normalised() -> None:
    """A scheme and stray slashes are tolerated and removed."""
    assert check_obs_dir("obs://bucket/a/b/") == "bucket/a/b"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"project_id": "has space"}, "letters and digits"),
        ({"job_ids": []}, "selection is empty"),
        ({"job_ids": None}, "selection is empty"),
        ({"select_all": True}, "not both"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_request_refusals_name_the_field(change: dict[str, object], reason: str) -> None:
    """Invalid requests raise InvalidInput naming the offending field or rule."""
    with pytest.raises(InvalidInput, match=reason):
        build_request({**GOOD, **change})


def test_batch_limit_is_enforced() -> None:
    """More IDs than EXPORTER_MAX_JOBS_PER_BATCH is refused, naming the setting."""
    with pytest.raises(InvalidInput, match="EXPORTER_MAX_JOBS_PER_BATCH"):
        build_request({**GOOD, "job_ids": [1, 2, 3]}, max_jobs=2)


def test_tags_need_key_and_value() -> None:
    """Tags become DLI's k=v list; a tag without '=' is refused."""
    assert parse_tags(["a=1", "b = 2"]) == "a=1,b=2"
    with pytest.raises(InvalidInput, match="KEY=VALUE"):
        parse_tags(["nope"])


def test_chunks_are_deterministic() -> None:
    """Planning the same IDs twice yields the same chunks, in order, none larger than the size."""
    ids = list(range(1, 24))
    plan = [list(chunk) for chunk in plan_chunks(ids, 10)]
    assert plan == [list(chunk) for chunk in plan_chunks(ids, 10)] == [ids[:10], ids[10:20], ids[20:]]
    assert len(plan_chunks(ids, 10)) == 3 and list(plan_chunks(ids, 10)[-1]) == ids[20:]


def _accepted_or_refused_by(body: str | bytes, key: str | None) -> None:
    """Parsing either gives a request that survives its own round trip through the queue, or refuses
    with InvalidInput whose message is one readable line naming `key` (the field that was spoiled)."""
    try:
        request = parse_batch_message(body)
    except InvalidInput as error:
        refused: InvalidInput | None = error
    else:
        refused = None
    if refused is not None:
        text = str(refused)
        assert text and "\n" not in text and "Traceback" not in text
        assert key is None or key in text or (refused.field or "").startswith(key), text
        return
    assert parse_batch_message(request.model_dump_json()) == request
    assert request.job_ids is None or all(0 < job_id < 2**63 for job_id in request.job_ids)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_message_parsing_raises_only_invalid_input(body: bytes) -> None:
    """Whatever bytes arrive on the queue, parsing gives a valid request or a one-line InvalidInput."""
    _accepted_or_refused_by(body, None)


_FIELDS = ["batch_id", "project_id", "obs_dir", "job_ids", "chunk_size", "filters"]
_GARBAGE = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=5),
    st.booleans(),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_FIELDS), _GARBAGE)
def test_a_spoiled_field_is_refused_by_its_name_or_accepted_as_valid(key: str, value: object) -> None:
    """A good message with one field replaced by garbage: refused naming that field, or (when the value
    happens to be valid) accepted as a request that round-trips."""
    _accepted_or_refused_by(json.dumps({**GOOD, key: value}), key)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([*_FIELDS, "select_all"]), _GARBAGE))
def test_structured_garbage_raises_only_invalid_input(data: dict[str, object]) -> None:
    """JSON objects of the right keys but wrong values are refused with InvalidInput, never a crash."""
    _accepted_or_refused_by(json.dumps(data), None)


def test_a_key_of_the_senders_own_is_quoted_on_one_line() -> None:
    """An unknown key holding a newline cannot split the refusal (a dead-letter reason, a log line)."""
    with pytest.raises(InvalidInput) as refused:
        parse_batch_message(json.dumps({**GOOD, "filters": {"x\nlevel=error fake": "1"}}))
    assert str(refused.value) == 'filters."x\\nlevel=error fake": Extra inputs are not permitted'
    assert refused.value.field == "filters"


def test_empty_selection_flags_are_named() -> None:
    """A given but empty --job-ids or --job-ids-file is refused by its own name; neither given means --all."""
    for text in ("", " ", ",, ,"):
        with pytest.raises(InvalidInput, match=r"^--job-ids is empty: give at least one job ID$"):
            selected_ids(text, None, "unused")
    with pytest.raises(InvalidInput, match=r"^--job-ids-file ids\.txt holds no job IDs"):
        selected_ids(None, ["# only comments", "", "  "], "ids.txt")
    assert selected_ids(None, ["7", "# c", "8"], "ids.txt") == [7, 8]
    assert selected_ids(None, None, "unused") is None


def test_request_from_flags_applies_defaults_and_filters() -> None:
    """Flags left out take the settings' defaults; --all carries its filters and tags to the request."""
    flags = {
        "obs_dir": "bucket/x",
        "select_all": True,
        "status": "job_running",
        "tags": ("team=data", "env = prod"),
    }
    request = request_from_flags(flags, project_id="p1", chunk_size=50, max_jobs=10)
    assert (request.project_id, request.chunk_size, request.select_all) == ("p1", 50, True)
    assert request.filters is not None and request.filters.status == "job_running"
    assert request.filters.tags == "team=data,env=prod" and request.filters.job_type is None
    assert request.batch_id.startswith("b-") and request.job_ids is None


@pytest.mark.parametrize(
    ("change", "field"),
    [({"chunk_size": 0}, "chunk_size"), ({"project_id": ""}, "project_id"), ({"batch_id": ""}, "batch_id")],
)
def test_explicit_empty_flags_are_refused_not_replaced(change: dict[str, object], field: str) -> None:
    """`--chunk-size 0`, `--project-id ''` or `--batch-id ''` is refused by name, not defaulted."""
    flags = {"obs_dir": "bucket", "job_ids": "1,2", **change}
    with pytest.raises(InvalidInput, match=field) as refused:
        request_from_flags(flags, project_id="p1", chunk_size=50, max_jobs=10)
    assert refused.value.field == field


def test_request_refusals_blame_their_field() -> None:
    """InvalidInput from a request blames the first wrong field in `field`; whole-request rules blame none."""
    with pytest.raises(InvalidInput) as refused:
        build_request({**GOOD, "obs_dir": "Bad_Bucket", "chunk_size": 0})
    assert refused.value.field == "obs_dir"
    with pytest.raises(InvalidInput) as whole:
        build_request({**GOOD, "job_ids": None})
    assert whole.value.field is None
