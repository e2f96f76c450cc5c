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
from harness.kernel.events import PROGRAM_STREAMS, SOURCE_KEYWORDS
from harness.ntstatus import parse_status

Duration = Annotated[float, BeforeValidator(parse_duration)]
Status = Annotated[int, BeforeValidator(parse_status)]
#: Service and registry value names reach sc.exe/reg.exe (and the registry): keep them plain.
ServiceName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
ParameterName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]
LogicalName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]

#: A program's file name: plain (no folders), ending in .exe.
PROGRAM_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,59}\.[Ee][Xx][Ee]"
#: The most characters a run step's arguments may have together: with quoting they fit every guest's command line
#: (the VM guest's PowerShell script travels in one cmd.exe line of at most 8191 characters).
MAX_ARGUMENT_CHARS = 700

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


def _program_name(value: Any) -> Any:
    if isinstance(value, str) and not re.fullmatch(PROGRAM_NAME, value):
        raise ValueError(f"expected a program's file name such as ioctl-client.exe (no folders, ending in .exe), got {value!r}")
    if not isinstance(value, str):
        raise ValueError(f"expected a program's file name such as ioctl-client.exe, got {value!r}")
    return value


ProgramName = Annotated[str, BeforeValidator(_program_name)]
SOURCE_HELP = ", ".join(SOURCE_KEYWORDS) + " or a program's file name (NAME.exe, NAME.exe:stdout, NAME.exe:stderr)"


def source_program(source: str) -> str | None:
    """The program an expectation's ``source`` names (None for a keyword such as ``kernel``)."""
    return None if source in SOURCE_KEYWORDS else source.partition(":")[0]


class LinePattern(_Strict):
    """A log line: ``line`` is the literal whole line, ``match`` a regular expression; ``source`` (see
    ``harness.kernel.events.selects``) restricts it to lines from there (None: from anywhere)."""

    line: str | None = None
    match: str | None = None
    source: str | None = None

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        streams = "|".join(PROGRAM_STREAMS)
        if value is None or value in SOURCE_KEYWORDS or re.fullmatch(f"{PROGRAM_NAME}(?::(?:{streams}))?", value):
            return value
        raise ValueError(f"expected {SOURCE_HELP}, got {value!r}")

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
        what = f"line {self.line!r}" if self.line is not None else f"match /{self.match}/"
        return what if self.source is None else f"{what} from {self.source}"


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


def _argument(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected text or a whole number, got {value!r}")
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise ValueError("an argument may not contain a control character (TAB, newline, ...)")
    return value


def _exit_code(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and -0x80000000 <= value < 0:
        return value & 0xFFFFFFFF  # the same 32 bits, as a signed exit code would print them
    try:
        return parse_status(value)
    except ValueError:
        raise ValueError(
            f"expected an exit code: a number from 0 to 4294967295 (or -2147483648 to -1), a value such as 0xC0000005 "
            f"or an NTSTATUS name such as STATUS_ACCESS_VIOLATION, got {value!r}"
        ) from None


Argument = Annotated[str, BeforeValidator(_argument)]
ExitCode = Annotated[int, BeforeValidator(_exit_code)]


class RunStep(_Strict):
    """``run``: a user-mode program in the guest, with ``args``; passes when it exits with ``expect_exit``."""

    run: ProgramName
    args: tuple[Argument, ...] = ()
    expect_exit: ExitCode = 0
    timeout: Duration | None = None

    @field_validator("args", mode="before")
    @classmethod
    def _a_list(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError("expected a list of arguments, such as [hello, 42]")
        return value

    @field_validator("args")
    @classmethod
    def _short_enough(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if sum(len(argument) for argument in value) > MAX_ARGUMENT_CHARS:
            raise ValueError(f"the arguments may have at most {MAX_ARGUMENT_CHARS} characters together")
        return value


STEP_KINDS = ("load", "unload", "run", "expect", "expect_no", "expect_order", "wait")


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
    | Annotated[RunStep, Tag("run")]
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
    #: Where run steps' programs are: a folder, relative to the scenario file (None: the drivers folder, then a
    #: ``programs`` folder beside it).
    programs: str | None = None
    timeout: Duration = DEFAULT_SCENARIO_TIMEOUT
    step_timeout: Duration = DEFAULT_STEP_TIMEOUT
    steps: list[Step] = Field(min_length=1)

    @field_validator("programs")
    @classmethod
    def _folder(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("expected a folder (relative to the scenario file) with the run steps' programs")
        return value
