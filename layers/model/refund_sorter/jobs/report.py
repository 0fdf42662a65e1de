"""What one run of a job did, for its logs, metrics and the CLI."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from refund_sorter.results import Status


@dataclass
class BatchReport:
    """What one run did. ``remaining`` photos were left for the next run (time budget or transient errors)."""

    classified: int = 0
    needs_review: int = 0
    failed: int = 0
    already_done: int = 0
    deferred: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    export_key: str | None = None
    export_rows: int = 0
    errors: list[str] = field(default_factory=list)

    def count(self, status: Status) -> None:
        if status is Status.FAILED:
            self.failed += 1
        elif status is Status.NEEDS_REVIEW:
            self.needs_review += 1
        else:
            self.classified += 1

    def absorb(self, other: BatchReport) -> None:
        """Add what another pass did to this report (a worker makes several passes over one chunk)."""
        for name in ("classified", "needs_review", "failed", "already_done", "deferred"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.stopped_early = self.stopped_early or other.stopped_early
        self.seconds += other.seconds
        self.errors.extend(other.errors)

    @property
    def processed(self) -> int:
        return self.classified + self.needs_review + self.failed

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"processed": self.processed}
