"""Request bodies of the REST API, validated by pydantic.

Text fields reject control characters and unpaired surrogates, which SQLite
and the ledger's JSON encoding cannot store, so bad input gets a 422 that
names the field instead of failing deep inside a transaction.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from iotwarden.api.timeutil import parse_when

__all__ = [
    "ActionCommand", "LabelRequest", "MaintenanceCreate", "NoteRequest", "SuppressionCreate", "SuppressionUpdate", "TokenCreate",
]


def check_text(value: str) -> str:
    """Reject unpaired surrogates and control characters other than tab and newline."""
    for character in value:
        code = ord(character)
        if 0xD800 <= code <= 0xDFFF:
            raise ValueError("contains an unpaired surrogate; send valid UTF-8 text")
        if (code < 32 and character not in "\t\n\r") or code == 127:
            raise ValueError(f"contains the control character U+{code:04X}")
    return value


Note = Annotated[str, Field(max_length=2000), AfterValidator(check_text)]
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(check_text)]
OptionalName = Annotated[str | None, Field(default=None, min_length=1, max_length=200), AfterValidator(lambda v: v if v is None else check_text(v))]
When = Annotated[str | float | int | None, Field(default=None, description="ISO 8601 time (UTC if no offset) or epoch seconds")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoteRequest(_Body):
    """Body of acknowledge and resolve."""

    note: Note = ""


class LabelRequest(_Body):
    """Body of a label: a false positive also suppresses the alert's pattern unless ``suppress`` is false."""

    label: Literal["true_positive", "false_positive"]
    note: Note = ""
    suppress: bool = True
    ttl: float | None = Field(default=None, gt=0, le=366 * 86400, description="Seconds of event time the suppression lasts; default 7 days")


class ActionCommand(_Body):
    """Body of approve, reject, release and confirm."""

    reason: Note = ""


class _Window(_Body):
    start: When = None
    end: When = None

    @field_validator("start", "end", mode="after")
    @classmethod
    def _parse(cls, value: Any, info: Any) -> float | None:
        return parse_when(value, info.field_name)


class SuppressionCreate(_Window):
    """A suppression: at least one of device, cohort, metric and category; start and end optional."""

    device: OptionalName = None
    cohort: OptionalName = None
    metric: OptionalName = None
    category: OptionalName = None
    reason: Note = ""


class MaintenanceCreate(SuppressionCreate):
    """A maintenance window: a suppression that needs both start and end."""


class SuppressionUpdate(_Window):
    """Fields to change; fields left out keep their value. Send null to clear start or end."""

    device: OptionalName = None
    cohort: OptionalName = None
    metric: OptionalName = None
    category: OptionalName = None
    reason: Note | None = None


class TokenCreate(_Body):
    """Body of a new token."""

    role: Literal["viewer", "analyst", "admin"]
    name: Name
