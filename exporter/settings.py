"""Every setting of the exporter, from `EXPORTER_*` variables, an optional TOML file, then flags.

Invalid values fail at start-up with a message that names the variable and says what is allowed; secrets
are `SecretStr`, so they never appear in `repr`, logs or validation errors.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_serializer, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from exporter.credentials.spec import ProfileSpec, SettingsToml, SourceName, check_profiles, profile_problems
from exporter.errors import ConfigError
from exporter.models import check_project_id
from exporter.rules import check_rate_limit

__all__ = ["ENV_PREFIX", "Settings", "format_validation_error", "load_settings", "mask_url_password"]

ENV_PREFIX = "EXPORTER_"
CONFIG_FILE_VARIABLE = f"{ENV_PREFIX}CONFIG_FILE"


def mask_url_password(url: str) -> str:
    """The URL with the password of its `user:password@` part (if any) replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _check_http_url(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. https://dli.example.com")
    return value.rstrip("/")


class Settings(BaseSettings):
    """The exporter's configuration. Field `x` is read from `EXPORTER_X`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        validate_default=True,
        hide_input_in_errors=True,
    )

    # --- DLI -------------------------------------------------------------------------------------------
    dli_endpoint: str | None = Field(default=None, description="DLI API base URL")
    dli_endpoint_template: str = Field(
        default="https://dli.{region}.myhuaweicloud.com", description="a campaign region's DLI endpoint"
    )
    obs_endpoint_template: str = Field(
        default="https://obs.{region}.myhuaweicloud.com", description="a campaign region's OBS endpoint"
    )
    iam_endpoint: str = Field(default="https://iam.myhuaweicloud.com", description="for --all-projects")
    project_id: str | None = Field(default=None, description="default project for submit")
    ak: SecretStr | None = Field(default=None, description="access key ID")
    sk: SecretStr | None = Field(default=None, description="secret access key")
    security_token: SecretStr | None = Field(default=None, description="token of temporary AK/SK")
    auth_token: SecretStr | None = Field(default=None, description="IAM token instead of AK/SK")
    # --- each secret also from a file, re-read when it changes; or keys fetched (credentials) --------
    ak_file: Path | None = None
    sk_file: Path | None = None
    security_token_file: Path | None = None
    auth_token_file: Path | None = None
    credentials: SourceName = Field(
        default="env", description="env | files | metadata | iam-token | workload-identity"
    )
    credentials_poll_interval: float = Field(default=1.0, gt=0, le=3600, description="seconds between looks")
    metadata_url: str = Field(default="http://169.254.169.254", description="ECS/CCE metadata service")
    iam_domain: str | None = Field(default=None, description="iam-token: the account (domain) name")
    iam_user: str | None = Field(default=None, description="iam-token: the IAM user")
    iam_password_file: Path | None = Field(default=None, description="iam-token: the user's password")
    idp_id: str | None = Field(default=None, description="workload-identity: IAM's identity provider")
    id_token_file: Path | None = Field(default=None, description="workload-identity: the projected id token")
    credential_profiles: dict[str, ProfileSpec] = Field(default_factory=dict, description="[credentials.X]")
    connect_timeout: float = Field(default=5.0, gt=0, le=300)
    read_timeout: float = Field(default=30.0, gt=0, le=3600)
    pool_size: int = Field(default=100, ge=1, le=10_000)
    tls_verify: bool = True
    ca_bundle: Path | None = None
    retry_max_attempts: int = Field(default=8, ge=1, le=100)
    retry_initial_backoff: float = Field(default=0.5, gt=0, le=60)
    retry_max_backoff: float = Field(default=30.0, gt=0, le=3600)
    retry_deadline: float = Field(default=300.0, gt=0, le=86_400)

    # --- rate and concurrency ---------------------------------------------------------------------------
    rate_limit: float | Literal["auto"] = Field(
        default="auto", description="requests/s to DLI, all replicas; auto: learn it from the gateway"
    )
    rate_start: float = Field(default=5.0, gt=0, le=100_000, description="auto: the first pace")
    rate_min: float = Field(default=1.0, gt=0, le=100_000, description="auto: never slower")
    rate_max: float = Field(default=1000.0, gt=0, le=100_000, description="auto: never faster")
    rate_burst: int = Field(default=1, ge=1, le=10_000)
    rate_headroom: float = Field(
        default=0.03, ge=0, le=0.5, description="share kept below rate_limit so jitter never trips a window"
    )
    concurrency: int = Field(default=16, ge=1, le=10_000)
    chunk_size: int = Field(default=100, ge=1, le=1000)
    max_jobs_per_batch: int = Field(default=1_000_000, ge=1)

    # --- OBS ----------------------------------------------------------------------------------------------
    obs_endpoint: str | None = None
    obs_region: str = Field(default="cn-north-4", min_length=1, max_length=64)
    obs_addressing_style: Literal["virtual", "path", "auto"] = "virtual"
    obs_ak: SecretStr | None = Field(default=None, description="defaults to EXPORTER_AK")
    obs_sk: SecretStr | None = Field(default=None, description="defaults to EXPORTER_SK")
    obs_ak_file: Path | None = None
    obs_sk_file: Path | None = None
    verify_grace_seconds: float = Field(default=120.0, ge=0, le=86_400)
    verify_concurrency: int = Field(default=32, ge=1, le=10_000)
    verify_zip: bool = False
    upload_manifest: bool = False

    # --- queue, ledger, daemon --------------------------------------------------------------------------
    queue_url: str = "sqlite:///./exporter.db"
    redis_key_prefix: str = Field(default="dli-exporter", min_length=1, max_length=64)
    redis_consumer_group: str = Field(default="exporters", min_length=1, max_length=64)
    redis_password: SecretStr | None = None
    redis_password_file: Path | None = Field(default=None, description="read at every (re)connect")
    lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    max_deliveries: int = Field(default=5, ge=1, le=1000)
    batch_retry_max_delay: float = Field(
        default=900.0, ge=1, le=86_400, description="longest wait before a deferred batch runs again"
    )
    max_batches: int = Field(default=2, ge=1, le=100, description="batches worked on at once")
    poll_interval: float = Field(default=1.0, gt=0, le=60)
    drain_seconds: float = Field(default=30.0, ge=0, le=3600)
    report_dir: Path = Path("./reports")
    http_host: str = "0.0.0.0"  # noqa: S104 - the daemon serves probes and metrics to the cluster
    http_port: int = Field(default=8080, ge=0, le=65535)

    # --- logs -----------------------------------------------------------------------------------------------
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("dli_endpoint", "obs_endpoint", "iam_endpoint", "metadata_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_http_url(value)

    @field_validator("dli_endpoint_template", "obs_endpoint_template")
    @classmethod
    def _template(cls, value: str) -> str:
        if "{region}" not in value:
            raise ValueError("must contain {region}, e.g. https://dli.{region}.myhuaweicloud.com")
        checked = _check_http_url(value.replace("{region}", "region"))
        if checked is None:
            raise ValueError("must be an http:// or https:// URL template")
        return value.rstrip("/")

    @field_validator("project_id")
    @classmethod
    def _project(cls, value: str | None) -> str | None:
        return None if value in (None, "") else check_project_id(value)

    @field_validator("credential_profiles")
    @classmethod
    def _profiles(cls, value: dict[str, ProfileSpec], info: ValidationInfo) -> dict[str, ProfileSpec]:
        return check_profiles(value, info.data.get("project_id"))

    @field_validator("queue_url")
    @classmethod
    def _queue_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in {"sqlite", "redis", "rediss"}:
            raise ValueError("must start with sqlite:/// (a file) or redis:// / rediss:// (host:port/db)")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"CA bundle {value} is not a readable file")
        return value

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _rate_limit(cls, value: Any) -> Any:
        return check_rate_limit(value)

    @field_serializer("rate_limit")
    def _rate_limit_out(self, value: float | str) -> float | str:
        """As given: `auto`, or the number (an int put in by `model_copy` is a rate all the same)."""
        return value if value == "auto" else float(value)

    @field_validator("log_format", "log_level", "obs_addressing_style", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init) beat environment, which beats the TOML file named by EXPORTER_CONFIG_FILE."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, file_secret_settings]
        config_file = os.environ.get(CONFIG_FILE_VARIABLE)
        if config_file:
            sources.append(SettingsToml(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """repr/str as pydantic makes them, but a password inside a URL setting shows as `***`."""
        for name, value in super().__repr_args__():
            yield name, mask_url_password(value) if isinstance(value, str) and "@" in value else value

    # --- derived ---------------------------------------------------------------------------------------
    @property
    def window_slack(self) -> float:
        """Seconds of lateness a release may have and still use its slot: the headroom's share of the
        gateway's one-second window, so late releases never put one request too many in it."""
        return self.rate_headroom * 1.0

    @property
    def rate_auto(self) -> bool:
        """EXPORTER_RATE_LIMIT=auto: the pace is learned from the gateway's answers."""
        return self.rate_limit == "auto"

    def paced(self, rate_limit: float | None) -> float:
        """The pace for a gateway limit (≤ 0 or None: EXPORTER_RATE_LIMIT), less the headroom; with
        auto, EXPORTER_RATE_START (the learned pace moves from there)."""
        if rate_limit and rate_limit > 0:
            return rate_limit * (1 - self.rate_headroom)
        return self.rate_start if self.rate_limit == "auto" else self.rate_limit * (1 - self.rate_headroom)

    def learns(self, rate_limit: float | Literal["auto"] | None) -> bool:
        """Whether an endpoint with this limit of its own (None: none) learns its pace from the gateway."""
        return rate_limit == "auto" or (not rate_limit and self.rate_auto)

    @property
    def uses_redis(self) -> bool:
        return urlsplit(self.queue_url).scheme in {"redis", "rediss"}

    def require(self, *names: str) -> None:
        """Raise ConfigError naming every listed setting that is unset (for commands that need them)."""
        missing = [f"{ENV_PREFIX}{name.upper()}" for name in names if getattr(self, name) in (None, "")]
        if missing:
            raise ConfigError(f"missing required setting(s): {', '.join(missing)}")

    def default_profile(self) -> ProfileSpec:
        """The profile of the flat settings (EXPORTER_AK, EXPORTER_AK_FILE, EXPORTER_CREDENTIALS, ...)."""
        fields = set(ProfileSpec.model_fields) - {"source"}
        return ProfileSpec(source=self.credentials, **{name: getattr(self, name) for name in fields})

    def require_credentials(self) -> None:
        """DLI needs AK and SK (values or files), an IAM token, or a source that fetches them."""
        named = lambda field: f"{ENV_PREFIX}{field.upper()}"  # noqa: E731
        problems = profile_problems(self.default_profile(), named, project_id=self.project_id)
        if problems:
            raise ConfigError("; ".join(problems))


def format_validation_error(error: ValidationError) -> str:
    """One line per bad setting: `EXPORTER_RATE_LIMIT: must be greater than 0`."""
    lines = []
    for item in error.errors():
        name = ENV_PREFIX + "_".join(str(part) for part in item["loc"]).upper()
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {message}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from environment, config file and `overrides` (flags); ConfigError when invalid."""
    config_file = os.environ.get(CONFIG_FILE_VARIABLE)
    if config_file and not Path(config_file).is_file():
        raise ConfigError(f"{CONFIG_FILE_VARIABLE}: {config_file} is not a readable file")
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None
