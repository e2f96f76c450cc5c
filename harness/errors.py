"""The harness's exception tree: one root, leaf classes carry what a user needs to act."""

from __future__ import annotations

from pathlib import Path


class HarnessError(Exception):
    """Root of every error the harness raises on purpose."""


class ConfigError(HarnessError):
    """Bad command-line input or configuration (exit code 2)."""


class FileError(HarnessError):
    """A YAML file that cannot be used, with the place that is wrong.

    Args:
        path: the file.
        line: 1-based line of the offending node, or None when unknown.
        field: dotted path of the field (``steps[2].expect.count``), or "".
        message: what was expected.
    """

    def __init__(self, path: Path | str, line: int | None, field: str, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ScenarioError(FileError):
    """A scenario file that cannot be used (exit code 2)."""


class ConfigFileError(FileError, ConfigError):
    """A configuration file that cannot be used (exit code 2)."""


class GuestError(HarnessError):
    """The guest (Wine session, VM, transport) broke: an infrastructure failure."""


class GuestHung(GuestError):
    """A guest operation did not finish in time."""


class DriverImageMissing(HarnessError):
    """A scenario names a driver image that is not in the drivers folder."""
