"""Part of the composition root: turns the settings into each adapter's own options.

Adapters never see `Settings`: each one takes a small frozen dataclass that holds only what it uses,
so it can be built and tested without the whole configuration. What one setting means for several adapters
(a single CA bundle, the DLI keys doubling as OBS keys) is decided here, once.
"""

from __future__ import annotations

from exporter.adapters.s3 import S3Options
from exporter.campaign import PlanDefaults
from exporter.credentials.profiles import ProfileDefaults
from exporter.credentials.redis_password import RedisAuth, redis_auth_of
from exporter.credentials.spec import DEFAULT_PROFILE, ProfileSpec
from exporter.dli.retry import RetryPolicy
from exporter.dli.session import SessionOptions
from exporter.handling import WorkerOptions
from exporter.pipeline import PipelineOptions
from exporter.settings import Settings

__all__ = [
    "known_profiles",
    "pipeline_options",
    "plan_defaults",
    "profile_defaults",
    "profile_specs",
    "redis_auth",
    "retry_policy",
    "s3_options",
    "session_options",
    "worker_options",
]

# Connections the S3 client keeps beyond one per verify task, for report and manifest uploads.
_S3_SPARE_CONNECTIONS = 4


def retry_policy(settings: Settings) -> RetryPolicy:
    """The four EXPORTER_RETRY_* settings."""
    return RetryPolicy(
        max_attempts=settings.retry_max_attempts,
        initial_backoff=settings.retry_initial_backoff,
        max_backoff=settings.retry_max_backoff,
        deadline=settings.retry_deadline,
    )


def session_options(settings: Settings) -> SessionOptions:
    """Pool size, timeouts and TLS policy of the shared DLI session."""
    return SessionOptions(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        pool_size=settings.pool_size,
        tls_verify=settings.tls_verify,
        ca_bundle=settings.ca_bundle,
    )


def s3_options(settings: Settings) -> S3Options:
    """The OBS client: its own keys if set, else the DLI keys (with their security token, which belongs to
    the DLI AK and so is not sent with OBS keys of their own)."""
    own_keys = bool(settings.obs_ak)  # an empty EXPORTER_OBS_AK counts as unset, as below
    return S3Options(
        region=settings.obs_region,
        endpoint=settings.obs_endpoint,
        addressing_style=settings.obs_addressing_style,
        access_key=settings.obs_ak or settings.ak,
        secret_key=settings.obs_sk or settings.sk,
        session_token=None if own_keys else settings.security_token,
        tls_verify=settings.tls_verify,
        ca_bundle=settings.ca_bundle,
        pool_size=settings.verify_concurrency + _S3_SPARE_CONNECTIONS,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
    )


def pipeline_options(settings: Settings) -> PipelineOptions:
    """The pipeline's knobs; chunk ownership (leases renewed while a chunk is worked) only on Redis."""
    return PipelineOptions(
        concurrency=settings.concurrency,
        verify_concurrency=settings.verify_concurrency,
        verify_grace_seconds=settings.verify_grace_seconds,
        verify_zip=settings.verify_zip,
        max_jobs_per_batch=settings.max_jobs_per_batch,
        chunk_ownership=settings.uses_redis,
        chunk_lease_seconds=settings.lease_seconds,
        upload_manifest=settings.upload_manifest,
    )


def worker_options(settings: Settings) -> WorkerOptions:
    return WorkerOptions(
        lease_seconds=settings.lease_seconds,
        max_batches=settings.max_batches,
        poll_interval=settings.poll_interval,
        drain_seconds=settings.drain_seconds,
        max_jobs_per_batch=settings.max_jobs_per_batch,
        max_deliveries=settings.max_deliveries,
        max_retry_delay=settings.batch_retry_max_delay,
        assist=settings.uses_redis,
        assist_cooldown=max(1.0, settings.poll_interval * 5),
    )


def plan_defaults(settings: Settings) -> PlanDefaults:
    """What a campaign falls back on: EXPORTER_CHUNK_SIZE, the endpoint templates, the per-batch limit;
    and the credential profiles its routes may name, when these settings have any (a submitter without
    profiles of its own leaves the check to the daemon, which fails a batch naming one it lacks)."""
    return PlanDefaults(
        chunk_size=settings.chunk_size,
        dli_endpoint_template=settings.dli_endpoint_template,
        obs_endpoint_template=settings.obs_endpoint_template,
        max_jobs=settings.max_jobs_per_batch,
        profiles=known_profiles(settings),
    )


def known_profiles(settings: Settings) -> frozenset[str] | None:
    """The credential profiles a submission may name, when these settings have any; None leaves the
    check to the daemon."""
    profiles = settings.credential_profiles
    return frozenset({DEFAULT_PROFILE, *profiles}) if profiles else None


def profile_specs(settings: Settings) -> dict[str, ProfileSpec]:
    """Every credential profile by name: the default one (the flat settings) and `[credentials.NAME]`."""
    return {DEFAULT_PROFILE: settings.default_profile(), **settings.credential_profiles}


def profile_defaults(settings: Settings) -> ProfileDefaults:
    """What profiles fall back on: the metadata URL, the IAM endpoint, the project, the poll interval."""
    return ProfileDefaults(
        metadata_url=settings.metadata_url,
        iam_endpoint=settings.iam_endpoint,
        project_id=settings.project_id,
        poll_interval=settings.credentials_poll_interval,
    )


def redis_auth(settings: Settings) -> RedisAuth:
    """The queue URL and the Redis password: EXPORTER_REDIS_PASSWORD, or EXPORTER_REDIS_PASSWORD_FILE read
    at every (re)connect (then a user name in the URL goes with it, and a password there is refused)."""
    return redis_auth_of(settings.queue_url, settings.redis_password, settings.redis_password_file)
