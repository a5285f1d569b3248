"""The campaign file: its shape (pydantic models) and reading it from TOML or from a JSON body.

A campaign file is a contract other tools write against, so its keys are fixed and an unknown key is
refused rather than ignored (a misspelt `job_id` must not quietly mean "no selection"). Every problem is
collected and reported with where it is (`targets[2].job_ids[0]`), so a person fixes the file in one
pass instead of one error per run. The models check only that each value has the right type; what the
values mean together (selections, duplicates) is `exporter.campaign.plan`'s work, which uses the pieces of
the file's language kept here: placeholders, what `[regions.NAME]` means, and reading `job_ids_file`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Formatter
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from exporter.credentials.spec import ProfileRef
from exporter.errors import InvalidInput
from exporter.intake import parse_id_lines
from exporter.routes import OnConflict, RateLimit, RegionRoute, check_endpoint
from exporter.rules import MAX_JOB_ID

__all__ = [
    "FILTER_KEYS",
    "MAX_REPORTED",
    "OBS_PLACEHOLDERS",
    "CampaignError",
    "CampaignSpec",
    "ImportToSpec",
    "Problems",
    "RegionSpec",
    "TargetSpec",
    "campaign_from_json",
    "campaign_from_toml",
    "describe_os_error",
    "load_campaign_file",
    "placeholders",
    "problem",
    "read_ids_file",
    "region_route",
    "render",
]

MAX_REPORTED = 100
FILTER_KEYS = ("status", "job_type", "queue_name", "name", "user_name", "tags")
OBS_PLACEHOLDERS = ("campaign_id", "project_id", "region")

JobId = Annotated[int, Field(ge=1, le=MAX_JOB_ID)]
ChunkSize = Annotated[int, Field(ge=1, le=1000)]

# Strict: TOML and JSON are typed, so `all = "yes"` or `job_ids = ["1"]` is a mistake, not a spelling.
_MODEL = ConfigDict(extra="forbid", strict=True, frozen=True)


class CampaignError(InvalidInput):
    """Everything wrong with a campaign, one problem per line, each naming the source and the field.

    Raised whole or not at all, so nothing of a campaign is submitted while part of it is wrong.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:MAX_REPORTED]
        if len(self.problems) > MAX_REPORTED:
            shown.append(f"... and {len(self.problems) - MAX_REPORTED} more problems")
        super().__init__("\n".join(shown), field="campaign")


def problem(source: str, where: str, message: str) -> str:
    """`campaign.toml: targets[2].job_ids: message` (or without `where` for the source as a whole)."""
    return f"{source}: {where}: {message}" if where else f"{source}: {message}"


@dataclass
class Problems:
    """The problems found so far, each naming the source and the place, raised together at the end."""

    source: str
    items: list[str] = field(default_factory=list)

    def add(self, where: str, message: str) -> None:
        """Add a problem once: the campaign's own obs_dir, wrong, is not wrong again for every target."""
        item = problem(self.source, where, message)
        if item not in self.items:
            self.items.append(item)


def describe_os_error(error: OSError) -> str:
    """`[Errno 2] No such file or directory`, without the absolute path the caller already names."""
    if error.errno is not None and error.strerror:
        return f"[Errno {error.errno}] {error.strerror}"
    return str(error)


def _known(names: Collection[str]) -> str:
    return "known: " + ", ".join("{" + name + "}" for name in sorted(names))


def placeholders(template: str, known: Collection[str], what: str) -> set[str]:
    """The placeholders a template uses; ValueError for a stray `{` or a name outside `known`.

    Only plain `{name}` is allowed: `{region.x}` or `{region!r}` would reach into Python objects.
    """
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as error:
        raise ValueError(f"malformed placeholder in {what} {template!r}: {error} ({_known(known)})") from None
    for _, name, spec, conversion in parsed:
        if name is not None and (name not in known or spec or conversion):
            written = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ValueError(f"unknown placeholder {{{written}}} in {what} ({_known(known)})")
    return {name for _, name, _, _ in parsed if name is not None}


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill a template that `placeholders` accepted (no attribute access, unlike str.format)."""
    parts = Formatter().parse(template)
    return "".join(literal + (values[name] if name is not None else "") for literal, name, _, _ in parts)


class RegionSpec(ProfileRef):
    """`[regions.NAME]`: endpoints left out come from the endpoint templates of the settings."""

    model_config = _MODEL

    dli_endpoint: str | None = None
    obs_endpoint: str | None = None
    rate_limit: RateLimit | None = None


def _endpoint(explicit: str | None, template: str, region: str) -> str:
    """The endpoint as given, else rendered from the settings' template; ValueError saying why not."""
    if explicit is not None:
        return check_endpoint(explicit)
    placeholders(template, ("region",), "the endpoint template")
    return check_endpoint(render(template, {"region": region}))


def region_route(
    name: str, region: RegionSpec, templates: Mapping[str, str], problems: Problems
) -> RegionRoute | None:
    """What `[regions.NAME]` means: its endpoints, else the templates' (`templates` maps the endpoint
    keys to them); None, with the problems added, when an endpoint is invalid or cannot be derived."""
    endpoints: dict[str, str] = {}
    for key, template in templates.items():
        explicit = getattr(region, key)
        try:
            endpoints[key] = _endpoint(explicit, template, name)
        except ValueError as error:
            if explicit is not None:
                problems.add(f"regions.{name}.{key}", str(error))
            else:
                problems.add(f"regions.{name}", f"cannot derive endpoints: {error}")
    complete = len(endpoints) == len(templates)
    return RegionRoute(name=name, rate_limit=region.rate_limit, **endpoints) if complete else None


class ImportToSpec(ProfileRef):
    """`[targets.import_to]`: the project the target's verified ZIPs are imported into (a migration)."""

    model_config = _MODEL

    region: str | None = None  # None: the target's own region
    project_id: str
    obs_dir: str | None = None  # None: the ZIPs are read where they were exported
    on_conflict: Annotated[OnConflict, Field(strict=False)] = OnConflict.SKIP  # TOML has no enums


class TargetSpec(ProfileRef):
    """One `[[targets]]` table: a project (in a region) and which of its jobs to export."""

    model_config = _MODEL

    region: str | None = None
    project_id: str
    job_ids: list[JobId] | None = None
    job_ids_file: str | None = None
    all: bool = False
    status: str | None = None
    job_type: str | None = None
    queue_name: str | None = None
    name: str | None = None
    user_name: str | None = None
    tags: list[str] | None = None
    obs_dir: str | None = None
    chunk_size: ChunkSize | None = None
    import_to: ImportToSpec | None = None

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        """A table `{env = "prod"}` becomes `["env=prod"]`, the form `--tag` flags have."""
        if not isinstance(value, dict):
            return value
        if not all(isinstance(tag, str) for tag in value.values()):
            raise ValueError('tag values must be strings, e.g. tags = {env = "prod"}')
        return [f"{key}={tag}" for key, tag in value.items()]

    def filters_given(self) -> list[str]:
        """The listing filters this target sets; they mean something only with `all = true`."""
        return [key for key in FILTER_KEYS if getattr(self, key) is not None]


class CampaignSpec(BaseModel):
    """A whole campaign file: defaults for its targets, the regions it names and the targets."""

    model_config = _MODEL

    campaign_id: str | None = None
    obs_dir: str | None = None
    chunk_size: ChunkSize | None = None
    regions: dict[str, RegionSpec] = Field(default_factory=dict)
    targets: list[TargetSpec] = Field(default_factory=list)


def _location(loc: tuple[int | str, ...]) -> str:
    """`('targets', 2, 'job_ids', 0)` as `targets[2].job_ids[0]`, the way the file is read."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def _known_keys(parent: tuple[int | str, ...]) -> str:
    """The keys allowed where an unknown one was found, so the misspelling is easy to fix."""
    model: type[BaseModel] = RegionSpec if parent[:1] == ("regions",) else CampaignSpec
    if parent[:1] == ("targets",):  # ("targets", 2) or ("targets", 2, "import_to")
        model = ImportToSpec if parent[2:3] == ("import_to",) else TargetSpec
    return ", ".join(model.model_fields)


def _describe(item: ErrorDetails) -> str:
    if item["type"] == "extra_forbidden":
        return f"unknown key (known: {_known_keys(item['loc'][:-1])})"
    return item["msg"].removeprefix("Value error, ")


def campaign_from_json(data: object, source: str = "campaign") -> CampaignSpec:
    """Validate parsed data (a TOML document or a JSON body) into a CampaignSpec, or raise every problem."""
    if not isinstance(data, dict):
        message = f"must be an object of campaign keys, not {type(data).__name__}"
        raise CampaignError([problem(source, "", message)])
    try:
        return CampaignSpec.model_validate(data)
    except ValidationError as error:
        items = error.errors(include_input=False, include_url=False)
        raise CampaignError([problem(source, _location(i["loc"]), _describe(i)) for i in items]) from None


def campaign_from_toml(content: bytes, source: str) -> CampaignSpec:
    """Parse a campaign file's bytes; the caller may hash the same bytes for a stable campaign ID."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        line = content[: error.start].count(b"\n") + 1
        raise CampaignError([problem(source, "", f"is not UTF-8 text (line {line})")]) from None
    try:
        data = tomllib.loads(text)
    except (ValueError, RecursionError) as error:  # TOMLDecodeError is a ValueError; it names the line
        raise CampaignError([problem(source, "", f"is not valid TOML: {error}")]) from None
    return campaign_from_json(data, source)


def read_ids_file(base_dir: Path | None, name: str) -> list[int]:
    """A target's `job_ids_file`, relative to the campaign file; ValueError saying why it cannot be used.

    A JSON body has no directory (`base_dir` None), so there an IDs file is refused, never looked up.
    """
    if base_dir is None:
        raise ValueError("job_ids_file is not accepted here; send job_ids")
    try:
        text = (base_dir / name).read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"cannot read {name}: {describe_os_error(error)}") from None
    except UnicodeDecodeError:
        raise ValueError(f"cannot read {name}: not UTF-8 text") from None
    try:
        ids = list(parse_id_lines(text.splitlines(), source=name))
    except InvalidInput as error:
        raise ValueError(str(error)) from None
    if not ids:
        raise ValueError(f"{name} holds no job IDs (only blank lines or comments)")
    return ids


def load_campaign_file(path: Path) -> CampaignSpec:
    """Read and validate a campaign file; an unreadable file is a CampaignError naming it."""
    try:
        content = path.read_bytes()
    except OSError as error:
        raise CampaignError([problem(str(path), "", f"cannot read: {describe_os_error(error)}")]) from None
    return campaign_from_toml(content, str(path))
