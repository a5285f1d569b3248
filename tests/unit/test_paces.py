"""What `status` and `campaign status` say about each DLI endpoint's pace (exporter.paces)."""

from __future__ import annotations

from exporter.paces import endpoint_paces, pace_json, pace_line, region_paces
from exporter.rate_states import SharedRate
from exporter.settings import Settings

DEFAULT = "https://dli.default.example:443"
ASIA = "https://dli.ap-southeast-1.example"
STATED = SharedRate(3, {"version": 1, "rate": 38.8, "ceiling": 38.8, "stated": 40.0}, "stated_limit", 1.0)
SEARCHED = SharedRate(9, {"version": 1, "rate": 23.125, "ceiling": None, "stated": None}, "probe", 1.0)


def settings(**values: object) -> Settings:
    return Settings.model_validate({"dli_endpoint": DEFAULT, "rate_limit": 10, **values})


def test_a_fixed_rate_is_its_number_less_the_headroom_whatever_was_learned() -> None:
    paces = region_paces(settings(), {"dli.default.example:443": STATED}, [(None, None, None)])
    assert pace_line("default", paces["default"]) == "DLI pace default: 9.7/s fixed"


def test_auto_shows_the_stated_limit_or_the_searched_rate_or_that_it_is_still_learning() -> None:
    learned = {"dli.default.example:443": STATED, "dli.ap-southeast-1.example:443": SEARCHED}
    regions = [(None, None, None), ("ap-southeast-1", ASIA, None), ("eu-west-1", "https://dli.eu", None)]
    paces = region_paces(settings(rate_limit="auto"), learned, regions)
    assert {name: pace_line(name, pace) for name, pace in paces.items()} == {
        "default": "DLI pace default: 38.8/s (stated limit 40/s)",
        "ap-southeast-1": "DLI pace ap-southeast-1: 23.1/s learned",
        "eu-west-1": "DLI pace eu-west-1: 5.0/s learning",  # EXPORTER_RATE_START until it learns
    }
    assert pace_json(paces["default"]) == {
        "endpoint": "dli.default.example:443",
        "rate_per_second": 38.8,
        "source": "stated",
        "stated_limit_per_second": 40.0,
    }


def test_a_region_of_its_own_limit_or_auto_beside_a_fixed_default() -> None:
    learned = {"dli.ap-southeast-1.example:443": SEARCHED}
    regions = [("ap-southeast-1", ASIA, "auto"), ("eu-west-1", "https://dli.eu", 20.0)]
    paces = region_paces(settings(), learned, regions)
    assert (paces["ap-southeast-1"].source, paces["ap-southeast-1"].rate) == ("learned", 23.125)
    assert (paces["eu-west-1"].source, paces["eu-west-1"].rate) == ("fixed", 20 * 0.97)


def test_a_region_on_the_default_endpoint_paces_as_the_default_does() -> None:
    paces = region_paces(settings(), {}, [("cn-north-4", DEFAULT, "auto")])
    assert paces["cn-north-4"].source == "fixed"  # one gateway, one limiter: EXPORTER_RATE_LIMIT's


def test_status_lists_the_default_endpoint_then_every_other_that_learned() -> None:
    learned = {"dli.ap-southeast-1.example:443": SEARCHED, "dli.default.example:443": STATED}
    paces = endpoint_paces(settings(rate_limit="auto"), learned)
    assert [(pace.endpoint, pace.source) for pace in paces] == [
        ("dli.default.example:443", "stated"),
        ("dli.ap-southeast-1.example:443", "learned"),
    ]


def test_status_without_a_dli_endpoint_lists_only_what_was_learned() -> None:
    learned = {"dli.ap-southeast-1.example:443": SEARCHED}
    paces = endpoint_paces(settings(dli_endpoint=None), learned)
    assert [(pace.endpoint, pace.source) for pace in paces] == [("dli.ap-southeast-1.example:443", "learned")]
    assert endpoint_paces(settings(dli_endpoint=None), {}) == []
