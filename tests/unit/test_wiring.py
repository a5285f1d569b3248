"""The composition root's conversions from settings to each adapter's own options."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import TEST_AK, TEST_SK

from exporter.adapters.s3 import S3Options, _client_kwargs
from exporter.dli.retry import RetryPolicy
from exporter.dli.session import SessionOptions
from exporter.settings import Settings
from exporter.wiring import pipeline_options, retry_policy, s3_options, session_options, worker_options

OBS_AK = "OBSAKEXAMPLE00000001"
OBS_SK = "OBSskExampleSecretKey000000000000000001"
TOKEN = "temporary-security-token-value"


def test_retry_policy_maps_the_retry_settings() -> None:
    """retry_policy maps the four EXPORTER_RETRY_* settings."""
    settings = Settings(
        retry_max_attempts=4, retry_initial_backoff=0.2, retry_max_backoff=9, retry_deadline=60
    )
    assert retry_policy(settings) == RetryPolicy(4, 0.2, 9.0, 60.0)


def test_session_options_map_pool_timeouts_and_tls(tmp_path: Path) -> None:
    """session_options carries the pool size, both timeouts and the TLS policy of the settings."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not read here\n")
    settings = Settings(pool_size=7, connect_timeout=3, read_timeout=9, tls_verify=False, ca_bundle=bundle)
    assert session_options(settings) == SessionOptions(
        connect_timeout=3, read_timeout=9, pool_size=7, tls_verify=False, ca_bundle=bundle
    )
    assert session_options(Settings()) == SessionOptions()  # the defaults agree


def test_s3_options_fall_back_to_the_dli_keys_with_their_token() -> None:
    """Without OBS keys of its own the S3 client uses the DLI AK/SK and their security token."""
    settings = Settings(
        ak=TEST_AK,
        sk=TEST_SK,
        security_token=TOKEN,
        obs_endpoint="http://127.0.0.1:9000",
        obs_region="us-east-1",
        obs_addressing_style="path",
        verify_concurrency=10,
    )
    options = s3_options(settings)
    assert (options.endpoint, options.region, options.addressing_style) == (
        "http://127.0.0.1:9000",
        "us-east-1",
        "path",
    )
    assert options.pool_size == 14  # one per verify task, plus spares for report uploads
    kwargs = _client_kwargs(options)
    assert kwargs["aws_access_key_id"] == TEST_AK
    assert kwargs["aws_secret_access_key"] == TEST_SK
    assert kwargs["aws_session_token"] == TOKEN
    assert kwargs["endpoint_url"] == "http://127.0.0.1:9000"
    assert kwargs["verify"] is True


def test_s3_options_with_own_keys_send_no_dli_token() -> None:
    """OBS keys of its own replace the DLI keys, and the DLI security token is not sent with them."""
    settings = Settings(ak=TEST_AK, sk=TEST_SK, security_token=TOKEN, obs_ak=OBS_AK, obs_sk=OBS_SK)
    kwargs = _client_kwargs(s3_options(settings))
    assert (kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"]) == (OBS_AK, OBS_SK)
    assert "aws_session_token" not in kwargs
    assert "endpoint_url" not in kwargs
    assert "aws_access_key_id" not in _client_kwargs(s3_options(Settings()))  # botocore's own chain


def test_s3_ca_bundle_is_what_certificates_are_checked_against(tmp_path: Path) -> None:
    """A CA bundle in the settings becomes botocore's `verify`, as before the options existed."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not read here\n")
    assert _client_kwargs(s3_options(Settings(ca_bundle=bundle)))["verify"] == str(bundle)
    assert _client_kwargs(s3_options(Settings(tls_verify=False)))["verify"] is False


def test_no_secret_shows_in_the_repr_of_the_options() -> None:
    """The options hold the keys as SecretStr: repr and str show neither AK/SK nor the token."""
    settings = Settings(ak=TEST_AK, sk=TEST_SK, security_token=TOKEN, obs_ak=OBS_AK, obs_sk=OBS_SK)
    text = " ".join(
        f"{options!r} {options}"
        for options in (
            s3_options(settings),
            s3_options(settings.model_copy(update={"obs_ak": None, "obs_sk": None})),
            session_options(settings),
            retry_policy(settings),
        )
    )
    for secret in (TEST_AK, TEST_SK, TOKEN, OBS_AK, OBS_SK):
        assert secret not in text


def test_s3_options_refuse_values_that_can_never_work() -> None:
    """An empty region, no connections or no time at all fail when the options are made."""
    with pytest.raises(ValueError, match="region"):
        S3Options(region="")
    with pytest.raises(ValueError, match="pool_size"):
        S3Options(region="us-east-1", pool_size=0)
    with pytest.raises(ValueError, match="connect_timeout"):
        S3Options(region="us-east-1", connect_timeout=0)


def test_chunk_leases_and_assisting_only_on_redis() -> None:
    """Chunk ownership (leases of EXPORTER_LEASE_SECONDS) and assisting are on with Redis, off with SQLite."""
    redis = Settings(queue_url="redis://127.0.0.1:6379/15", lease_seconds=4, read_timeout=2)
    sqlite = Settings(queue_url="sqlite:///x.db")
    assert pipeline_options(redis).chunk_ownership and pipeline_options(redis).chunk_lease_seconds == 4
    assert worker_options(redis).assist
    assert not pipeline_options(sqlite).chunk_ownership and not worker_options(sqlite).assist


def test_batch_retry_delay_has_its_own_cap() -> None:
    """The batch's nack delay is capped by EXPORTER_BATCH_RETRY_MAX_DELAY, not the DLI backoff cap."""
    options = worker_options(Settings(retry_max_backoff=30, batch_retry_max_delay=600))
    assert options.max_retry_delay == 600
