"""Settings of the DLI simulator: the exporter's own `EXPORTER_*` names for credentials, project and
object store, plus `EXPORTER_SIM_*` knobs for the catalogue and the faults.

Sharing the names means one environment drives both sides of a demo: the exporter signs with the AK/SK
the simulator checks, and both talk to the same S3 server. Invalid values fail at start-up with one line
per setting, like the exporter's settings.

One simulator stands for one region's DLI (`sim_region`, its own gateway limit) serving one or more
projects (`project_id` plus `sim_projects`), and for the account's IAM project listing
(`sim_iam_projects`), so a multi-region campaign can run against several simulators on this machine.

For migrations, `sim_target_projects` are projects that start EMPTY and fill up by imports (`projects.py`;
`sim_existing_names` seeds names there to provoke conflicts), and `sim_readable_buckets` is what this
region's DLI may read ZIPs from (empty = any), as a target region reads only its own buckets. Target
projects are served like the others (gateway, faults) but are not in the default IAM listing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from exporter.errors import ConfigError
from exporter.models import check_project_id
from exporter.routes import check_region_name
from exporter.settings import ENV_PREFIX
from exporter.simulator.faults import FaultKnobs

__all__ = ["SimIamProject", "SimulatorSettings", "load_simulator_settings", "migration_settings"]

_SIM_PREFIX = "sim_"
_NAME_MAX = 57  # listing_jobs.rst: job names hold 0 to 57 characters (a created job needs one)


def _parse_id_set(value: Any) -> Any:
    """Accept `3,5,7`, `[3, 5, 7]` (JSON) or a Python collection for the missing IDs or extra projects."""
    if isinstance(value, str):
        text = value.strip().strip("[]")
        return [part.strip().strip('"') for part in text.split(",") if part.strip()]
    return value


class SimIamProject(BaseModel):
    """One project of the simulated account's IAM listing; sub-projects are named `region_name`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str = Field(min_length=1, max_length=64)
    enabled: bool = True

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_project_id(value)


class SimulatorSettings(BaseSettings):
    """Field `x` is read from `EXPORTER_X`; simulator knobs are `sim_*` (`EXPORTER_SIM_*`)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        validate_default=True,
        hide_input_in_errors=True,
    )

    # --- what the simulated DLI accepts -------------------------------------------------------------
    project_id: str = Field(description="the project that exists (see sim_projects for more)")
    ak: SecretStr | None = Field(default=None, description="the access key ID clients sign with")
    sk: SecretStr | None = Field(default=None, description="its secret key")
    security_token: SecretStr | None = Field(
        default=None, description="when set, AK/SK requests must carry it in X-Security-Token"
    )
    auth_token: SecretStr | None = Field(default=None, description="accepted in X-Auth-Token")

    # --- where the ZIPs go ------------------------------------------------------------------------------
    obs_endpoint: str | None = None
    obs_region: str = Field(default="cn-north-4", min_length=1, max_length=64)
    obs_addressing_style: Literal["virtual", "path", "auto"] = Field(
        default="path", description="path suits local S3 servers, which is what the simulator mostly uses"
    )
    obs_ak: SecretStr | None = Field(default=None, description="defaults to EXPORTER_AK")
    obs_sk: SecretStr | None = Field(default=None, description="defaults to EXPORTER_SK")

    # --- catalogue ----------------------------------------------------------------------------------------
    sim_jobs: int = Field(default=1000, ge=0, le=10_000_000, description="jobs 1..N exist")
    sim_missing_ids: Annotated[frozenset[int], NoDecode] = Field(
        default=frozenset(), description="IDs inside 1..N that do not exist"
    )
    sim_seed: int | None = Field(default=None, description="seed of the fault dice; unset = random")
    sim_region: str | None = Field(default=None, description="the region this DLI stands for (logs, stats)")
    sim_projects: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(), description="more projects served beside project_id, each with jobs 1..N"
    )
    sim_target_projects: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(), description="projects served EMPTY, filled by imports (comma-separated)"
    )
    sim_existing_names: dict[str, list[str]] = Field(
        default_factory=dict, description="JSON: target project -> job names that exist before any import"
    )
    sim_readable_buckets: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(), description="buckets imports may read (comma-separated); empty = any"
    )

    # --- IAM's project listing (GET /v3/projects) -----------------------------------------------------------
    sim_iam_projects: list[SimIamProject] = Field(
        default_factory=list, description="the account's projects (JSON); empty = the ones served here"
    )
    sim_iam_mos: bool = Field(default=True, description="list the global pseudo-project MOS, as IAM does")
    # --- credentials handed out: the metadata service's temporary keys, IAM's tokens (POST /v3/auth/tokens)
    sim_metadata_ttl_seconds: float = Field(default=3600, gt=0, le=86_400, description="minted keys live")
    sim_token_ttl_seconds: float = Field(default=86_400, gt=0, le=86_400, description="issued tokens live")
    sim_iam_domain: str | None = Field(default=None, description="the account whose user gets tokens")
    sim_iam_user: str | None = None
    sim_iam_password: SecretStr | None = None
    # a workload identity: the id token IAM exchanges for keys, from the identity provider sim_idp_id
    sim_idp_id: str | None = Field(default=None, description="POST /v3.0/OS-AUTH/id-token/tokens")
    sim_id_token: SecretStr | None = Field(default=None, description="the only id token accepted")
    sim_securitytoken_ttl_seconds: float = Field(default=3600, gt=0, le=86_400, description="keys live")

    # --- faults (also changeable at runtime, see FaultKnobs) ----------------------------------------------
    sim_latency_ms: float = 0.0
    sim_latency_jitter_ms: float = 0.0
    sim_rate_limit: float = 0.0
    sim_rate_window_seconds: float = 1.0
    sim_throttle_states_limit: bool = True
    sim_throttle_policy: Literal["user", "ip"] = "user"
    sim_p_500: float = 0.0
    sim_p_503: float = 0.0
    sim_p_reset: float = 0.0
    sim_p_malformed: float = 0.0
    sim_p_html: float = 0.0
    sim_p_not_success: float = 0.0
    sim_p_timeout: float = 0.0
    sim_timeout_seconds: float = 60.0
    sim_p_late: float = 0.0
    sim_late_seconds: float = 5.0
    sim_p_never: float = 0.0
    sim_p_import_lost: float = 0.0
    sim_import_ids_as_strings: bool = True
    sim_is_success_as_string: bool = False
    sim_list_error: str | None = Field(default=None, description="e.g. 403:DLI.0003: every listing fails so")
    sim_export_error: str | None = Field(default=None, description="likewise for every export")
    sim_iam_error: str | None = Field(default=None, description="likewise for every IAM project listing")
    sim_import_error: str | None = Field(default=None, description="likewise for every import")

    @field_validator("project_id")
    @classmethod
    def _project(cls, value: str) -> str:
        return check_project_id(value)

    @field_validator("obs_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:9000")
        return value.rstrip("/")

    @field_validator("obs_addressing_style", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator(
        "sim_missing_ids", "sim_projects", "sim_target_projects", "sim_readable_buckets", mode="before"
    )
    @classmethod
    def _id_set(cls, value: Any) -> Any:
        return _parse_id_set(value)

    @field_validator("sim_projects", "sim_target_projects")
    @classmethod
    def _projects(cls, value: frozenset[str]) -> frozenset[str]:
        return frozenset(check_project_id(project) for project in value)

    @field_validator("sim_existing_names")
    @classmethod
    def _existing_names(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        """Job names are unique in a project and hold 1 to 57 characters, as DLI allows."""
        for project, names in value.items():
            repeated = sorted({name for name in names if names.count(name) > 1})
            bad = [name for name in names if not 1 <= len(name) <= _NAME_MAX]
            if repeated or bad:
                raise ValueError(
                    f"names of {project} must be unique and 1 to {_NAME_MAX} characters: "
                    f"{(repeated + bad)[:10]}"
                )
        return value

    @field_validator("sim_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return check_region_name(value) if value else None

    @property
    def served_projects(self) -> frozenset[str]:
        """Every project whose DLI APIs answer: `project_id`, `sim_projects` and `sim_target_projects`."""
        return self.sim_projects | self.sim_target_projects | {self.project_id}

    @model_validator(mode="after")
    def _consistent(self) -> SimulatorSettings:
        if self.auth_token is None and (self.ak is None or self.sk is None):
            raise ValueError(
                f"set {ENV_PREFIX}AK and {ENV_PREFIX}SK (or {ENV_PREFIX}AUTH_TOKEN): "
                "the simulator refuses every request it cannot authenticate"
            )
        outside = sorted(job_id for job_id in self.sim_missing_ids if not 1 <= job_id <= self.sim_jobs)
        if outside:
            raise ValueError(
                f"{ENV_PREFIX}SIM_MISSING_IDS must lie in 1..{self.sim_jobs} "
                f"({ENV_PREFIX}SIM_JOBS); outside: {outside[:10]}"
            )
        self._check_targets()
        self.obs_ak = self.obs_ak or self.ak
        self.obs_sk = self.obs_sk or self.sk
        self.fault_knobs()  # the knobs are validated as a whole (ranges, probabilities adding up)
        return self

    def _check_targets(self) -> None:
        """A target project starts empty, so it cannot also be a static one; seeds need a target."""
        static = self.sim_projects | {self.project_id}
        both = sorted(self.sim_target_projects & static)
        if both:
            raise ValueError(f"{ENV_PREFIX}SIM_TARGET_PROJECTS must not repeat static projects: {both}")
        strays = sorted(set(self.sim_existing_names) - self.sim_target_projects)
        if strays:
            raise ValueError(
                f"{ENV_PREFIX}SIM_EXISTING_NAMES names projects that are not target projects: {strays}"
            )

    def fault_knobs(self) -> FaultKnobs:
        """The `sim_*` fault settings as the runtime-changeable knob set; ValueError when invalid."""
        values = {name: getattr(self, _SIM_PREFIX + name) for name in FaultKnobs.model_fields}
        try:
            return FaultKnobs(**values)
        except ValidationError as error:
            raise ValueError(_describe(error, prefix=f"{ENV_PREFIX}SIM_")) from None


def _describe(error: ValidationError, prefix: str, separator: str = "; ") -> str:
    """One clause per problem, naming the variable when pydantic knows which one it was."""
    clauses = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        location = "_".join(str(part) for part in item["loc"]).upper()
        clauses.append(f"{prefix}{location}: {message}" if location else message)
    return separator.join(clauses)


def load_simulator_settings(**overrides: Any) -> SimulatorSettings:
    """Settings from the environment and `overrides` (None values ignored); ConfigError when invalid."""
    try:
        return SimulatorSettings(**{name: value for name, value in overrides.items() if value is not None})
    except ValidationError as error:
        raise ConfigError("invalid simulator settings:\n  " + _describe(error, ENV_PREFIX, "\n  ")) from None


def migration_settings(
    targets: Sequence[str], buckets: Sequence[str], names: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """The `sim_*` migration settings from plain collections (what `devstack` passes along)."""
    return {
        "sim_target_projects": frozenset(targets),
        "sim_readable_buckets": frozenset(buckets),
        "sim_existing_names": {project: list(seeded) for project, seeded in names.items()},
    }
