"""What a migration records: where a batch's jobs go, and per chunk the state of its copy and import.

A chunk's export lives in the `Ledger` as before (verified is where it ends for an export); a migration
batch adds one `MigrationStep` per verified chunk in the `MigrationLedger`, moving
`pending → copied → imported → confirmed`, or `failed`, each saved before the next stage depends on it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from exporter.models import ErrorInfo
from exporter.routes import Destination, OnConflict

__all__ = [
    "Destination",
    "JobMapRow",
    "JobMapState",
    "MigrationStep",
    "MigrationTally",
    "OnConflict",
    "StepState",
]


class StepState(StrEnum):
    PENDING = "pending"
    COPIED = "copied"
    IMPORTED = "imported"
    CONFIRMED = "confirmed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in {StepState.CONFIRMED, StepState.FAILED}

    @property
    def rank(self) -> int:
        return _STEP_RANK[self]

    def may_move_to(self, new: StepState) -> bool:
        """Forward only; an open state may be saved again (a retry's attempt count)."""
        return not self.terminal and (new.rank > self.rank or new is self)


_STEP_RANK = {
    StepState.PENDING: 0,
    StepState.COPIED: 1,
    StepState.IMPORTED: 2,
    StepState.CONFIRMED: 3,
    StepState.FAILED: 3,
}

JobMapState = Literal["imported", "skipped", "failed"]


class JobMapRow(BaseModel):
    """One job of the map a migration team hands on: its old ID, its new ID in the target, what happened."""

    old_job_id: int
    new_job_id: int | None = Field(default=None, description="-1: skipped, a job of that name existed")
    state: JobMapState
    remark: str | None = None
    name: str | None = None
    error: ErrorInfo | None = None


class MigrationStep(BaseModel):
    """One chunk's migration: the ZIPs where the target reads them, the import's outcome per job."""

    batch_id: str
    index: int
    state: StepState = StepState.PENDING
    source_zips: list[str] = Field(default_factory=list, description="bucket/key as exported")
    zip_files: list[str] = Field(default_factory=list, description="bucket/key where the target reads them")
    names: dict[int, str] = Field(default_factory=dict, description="old job ID -> job name (from the ZIPs)")
    rows: list[JobMapRow] = Field(default_factory=list)
    attempts: int = 0
    error: ErrorInfo | None = None


class MigrationTally(BaseModel):
    """A migration batch's counts: steps by state and job-map rows by state."""

    FIELDS: ClassVar[tuple[str, ...]] = (
        "imported_steps",
        "steps",
        "open",
        "confirmed",
        "failed",
        "imported",
        "skipped",
        "import_failed",
    )

    steps: int = 0
    open: int = 0
    imported_steps: int = 0  # steps imported and not yet confirmed
    confirmed: int = 0
    failed: int = 0
    imported: int = 0
    skipped: int = 0
    import_failed: int = 0

    @classmethod
    def of(cls, steps: list[MigrationStep]) -> MigrationTally:
        rows = [row for step in steps for row in step.rows]
        return cls(
            steps=len(steps),
            open=sum(1 for s in steps if not s.state.terminal),
            imported_steps=sum(1 for s in steps if s.state is StepState.IMPORTED),
            confirmed=sum(1 for s in steps if s.state is StepState.CONFIRMED),
            failed=sum(1 for s in steps if s.state is StepState.FAILED),
            imported=sum(1 for r in rows if r.state == "imported"),
            skipped=sum(1 for r in rows if r.state == "skipped"),
            import_failed=sum(1 for r in rows if r.state == "failed"),
        )
