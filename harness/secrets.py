"""Secrets (guest passwords) that never show up in logs, reports, reprs or exceptions."""

from __future__ import annotations

import os
from pathlib import Path

from harness.errors import ConfigError


class Secret:
    """A string that prints as ``***``. Call ``reveal()`` only where the value is handed to a library."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("secret", len(self._value)))

    def mask(self, text: str) -> str:
        """``text`` with every occurrence of the secret replaced by ``***``."""
        return text.replace(self._value, "***") if self._value else text


def load_secret(env: str | None, file: Path | None, what: str) -> Secret:
    """A secret from an environment variable or a file (never from the command line or the config itself).

    Raises:
        ConfigError: neither is given, or the one given is empty or unreadable.
    """
    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(f"{what}: environment variable {env} is not set")
        return Secret(value)
    if file is not None:
        try:
            value = file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as error:
            raise ConfigError(f"{what}: cannot read {file}: {error.strerror}") from None
        if not value:
            raise ConfigError(f"{what}: {file} is empty")
        return Secret(value)
    raise ConfigError(f"{what}: give password_env (an environment variable) or password_file")
