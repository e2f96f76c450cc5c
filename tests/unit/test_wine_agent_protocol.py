"""Requests to the Wine guest's agent are data, never commands."""

from __future__ import annotations

import pytest

from harness.guests.wine.guest import agent_command, parse_reply


def test_fields_are_tab_separated() -> None:
    assert agent_command("param", "sysRecv1", "Tag", "sz", "a b") == "param\tsysRecv1\tTag\tsz\ta b\n"
    assert agent_command("start", "sysTest", 30000) == "start\tsysTest\t30000\n"


@pytest.mark.parametrize("evil", ["x\tstop", "x\nexit", "x\r\nstart\tother\t1"])
def test_a_field_cannot_smuggle_another_request(evil: str) -> None:
    with pytest.raises(ValueError, match="control character"):
        agent_command("param", "svc", "Tag", "sz", evil)


def test_shell_metacharacters_pass_as_plain_text() -> None:
    text = 'a & del C:\\ | calc; $(x) `y` "q"'
    assert agent_command("param", "s", "Tag", "sz", text).split("\t")[-1] == text + "\n"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ok state=4 win32=0\n", (True, None, "state=4 win32=0")),
        ("ok ready\n", (True, None, "ready")),
        ("err 2 StartService failed\n", (False, 2, "StartService failed")),
        ("err 1060 no such service", (False, 1060, "no such service")),
        ("err x y", (False, None, "err x y")),
        ("garbage", (False, None, "unexpected agent reply: 'garbage'")),
    ],
)
def test_parse_reply(line: str, expected: tuple[bool, int | None, str]) -> None:
    assert parse_reply(line) == expected
