"""What an execution returns."""

from __future__ import annotations

import traceback as tb
from dataclasses import dataclass, field
from enum import Enum


class Status(Enum):
    """How an execution ended."""

    SUCCESS = "success"
    PAUSED = "paused"
    FAILED = "failed"
    CANCELED = "canceled"
    INIT_FAILED = "init-failed"

    def __repr__(self) -> str:
        return f"Status.{self.name}"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An exception a checkpoint raised: qualified type name, message, formatted traceback."""

    type: str
    message: str
    traceback: str

    @classmethod
    def from_exception(cls, err: BaseException) -> ErrorInfo:
        kind = type(err)
        name = kind.__qualname__ if kind.__module__ == "builtins" else (
            f"{kind.__module__}.{kind.__qualname__}")
        return cls(name, str(err), "".join(tb.format_exception(err)))

    def as_json(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one execution."""

    status: Status
    failed: list[str] = field(default_factory=list)
    errors: dict[str, ErrorInfo] = field(default_factory=dict)
    canceled: str | None = None

    def as_json(self) -> dict[str, object]:
        return {"status": self.status.name, "failed": list(self.failed),
                "canceled": self.canceled,
                "errors": {k: v.as_json() for k, v in self.errors.items()}}


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """Overall progress (0–100, never decreasing within an execution)."""

    percent: float
    checkpoint: str | None
    message: str = ""
