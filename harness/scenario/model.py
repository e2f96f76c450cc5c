"""The scenario file format (see scenarios/README.md), as pydantic models.

Validation happens when a file is loaded (``harness.scenario.loader``), so a
bad file is reported before any guest starts.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from harness.durations import parse_duration
from harness.ntstatus import parse_status

Duration = Annotated[float, BeforeValidator(parse_duration)]
Status = Annotated[int, BeforeValidator(parse_status)]
#: Service and registry value names reach sc.exe/reg.exe (and the registry): keep them plain.
ServiceName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
ParameterName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]
LogicalName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]

DEFAULT_WITHIN = 5.0
DEFAULT_SCENARIO_TIMEOUT = 120.0
DEFAULT_STEP_TIMEOUT = 30.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DriverSpec(_Strict):
    """One driver of a scenario: its image file, service name and Parameters values."""

    image: str
    service: ServiceName
    parameters: dict[ParameterName, int | str] = Field(default_factory=dict)

    @field_validator("image")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+\.sys", value):
            raise ValueError("expected a file name such as receiver.sys (no folders), found in the drivers folder")
        return value

    @field_validator("parameters")
    @classmethod
    def _registry_values(cls, value: dict[str, int | str]) -> dict[str, int | str]:
        for name, item in value.items():
            if isinstance(item, bool):
                raise ValueError(f"{name}: expected a number (REG_DWORD) or a string (REG_SZ)")
            if isinstance(item, int) and not 0 <= item <= 0xFFFFFFFF:
                raise ValueError(f"{name}: a REG_DWORD must be between 0 and 4294967295")
            if isinstance(item, str) and not re.fullmatch(r"[\x20-\x7e]{0,256}", item):
                raise ValueError(f"{name}: a string value must be printable ASCII, at most 256 characters")
        return value


class Count(_Strict):
    """How many matching lines: at least ``min``, at most ``max`` (None: no limit)."""

    min: int = Field(default=1, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _from_number(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"min": value, "max": value}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Count:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) is smaller than min ({self.min})")
        return self

    def describe(self) -> str:
        if self.max is None:
            return f"at least {self.min}"
        if self.max == self.min:
            return f"exactly {self.min}"
        return f"between {self.min} and {self.max}"


class LinePattern(_Strict):
    """A kernel-log line: ``line`` is the literal whole line, ``match`` a regular expression."""

    line: str | None = None
    match: str | None = None

    @field_validator("match")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a valid regular expression: {error}") from None
        return value

    @model_validator(mode="after")
    def _one_of(self) -> LinePattern:
        if (self.line is None) == (self.match is None):
            raise ValueError("give exactly one of 'line' (literal whole line) or 'match' (regular expression)")
        return self

    def matches(self, text: str) -> bool:
        if self.line is not None:
            return text == self.line
        assert self.match is not None
        return re.search(self.match, text) is not None

    def describe(self) -> str:
        return f"line {self.line!r}" if self.line is not None else f"match /{self.match}/"


Since = Literal["previous", "start"]


class Presence(LinePattern):
    """``expect``: matching lines appear, ``count`` times, within ``within``."""

    count: Count = Field(default_factory=Count)
    within: Duration = DEFAULT_WITHIN
    since: Since = "previous"


class Absence(LinePattern):
    """``expect_no``: no matching line during ``for`` (and since the previous step ended)."""

    for_: Duration = Field(default=0.0, alias="for")
    since: Since = "previous"


class Order(_Strict):
    """``expect_order``: lines matching each pattern, in this order."""

    lines: list[LinePattern] = Field(min_length=2)
    within: Duration = DEFAULT_WITHIN
    since: Since = "previous"


class LoadStep(_Strict):
    load: LogicalName
    expect_status: Status = 0
    timeout: Duration | None = None


class UnloadStep(_Strict):
    unload: LogicalName
    expect_status: Status = 0
    timeout: Duration | None = None


class ExpectStep(_Strict):
    expect: Presence


class ExpectNoStep(_Strict):
    expect_no: Absence


class ExpectOrderStep(_Strict):
    expect_order: Order


class WaitStep(_Strict):
    wait: Duration


STEP_KINDS = ("load", "unload", "expect", "expect_no", "expect_order", "wait")


def step_kind(value: Any) -> str | None:
    """The step's kind: the one key of STEP_KINDS it has (None when it has none or several)."""
    if isinstance(value, dict):
        found = [kind for kind in STEP_KINDS if kind in value]
        return found[0] if len(found) == 1 else None
    for kind in STEP_KINDS:
        if hasattr(value, kind):
            return kind
    return None


Step = Annotated[
    Annotated[LoadStep, Tag("load")]
    | Annotated[UnloadStep, Tag("unload")]
    | Annotated[ExpectStep, Tag("expect")]
    | Annotated[ExpectNoStep, Tag("expect_no")]
    | Annotated[ExpectOrderStep, Tag("expect_order")]
    | Annotated[WaitStep, Tag("wait")],
    Discriminator(
        step_kind,
        custom_error_type="step_kind",
        custom_error_message="a step needs exactly one of: " + ", ".join(STEP_KINDS),
    ),
]


def _verifier_flags(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return int(value, 16) if value.lower().startswith("0x") else int(value)
        except ValueError:
            raise ValueError(f"expected Driver Verifier flags such as 0x209BB, got {value!r}") from None
    return value


class VerifierFlags(_Strict):
    """Driver Verifier with explicit flags (``verifier.exe /flags``)."""

    flags: Annotated[int, BeforeValidator(_verifier_flags), Field(gt=0, le=0xFFFFFFFF)]


class Scenario(_Strict):
    """A load-order scenario: drivers, then steps run in order against one fresh guest."""

    name: str = Field(min_length=1)
    description: str = ""
    #: Driver Verifier for the scenario's drivers (VM guest only): "standard" or {flags: 0x...}.
    verifier: Literal["standard"] | VerifierFlags | None = None
    drivers: dict[LogicalName, DriverSpec] = Field(min_length=1)
    timeout: Duration = DEFAULT_SCENARIO_TIMEOUT
    step_timeout: Duration = DEFAULT_STEP_TIMEOUT
    steps: list[Step] = Field(min_length=1)
