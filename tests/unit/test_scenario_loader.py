"""Scenario files: the users' format, and errors that name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import ScenarioError
from harness.scenario.loader import discover, format_field, load_scenario
from harness.scenario.model import Count, ExpectNoStep, ExpectStep, LoadStep, WaitStep

GOOD = """\
name: a receiver loaded before the sender fails
drivers:
  sender:   {image: sender.sys,   service: sysTest,  parameters: {PeriodMs: 200}}
  receiver: {image: receiver.sys, service: sysRecv1}
timeout: 30s
steps:
  - load: receiver
    expect_status: STATUS_OBJECT_NAME_NOT_FOUND
  - load: sender
  - load: receiver
  - expect: {line: "[sysRecv1]:get notify ulType:(1)\\tulValue:(hello)", count: {min: 3}, within: 2s}
  - unload: receiver
  - expect_no: {match: 'sysRecv1\\]:get notify', for: 1s}
  - wait: 500ms
  - unload: sender
"""


def write(tmp_path: Path, text: str, name: str = "case.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_issue_example_loads(tmp_path: Path) -> None:
    loaded = load_scenario(write(tmp_path, GOOD))
    scenario = loaded.scenario
    assert loaded.id == "case"
    assert scenario.timeout == 30.0
    assert scenario.drivers["sender"].parameters == {"PeriodMs": 200}
    first = scenario.steps[0]
    assert isinstance(first, LoadStep) and first.expect_status == 0xC0000034
    expect = scenario.steps[3]
    assert isinstance(expect, ExpectStep)
    assert expect.expect.line == "[sysRecv1]:get notify ulType:(1)\tulValue:(hello)"
    assert expect.expect.count == Count(min=3, max=None) and expect.expect.within == 2.0
    absence = scenario.steps[5]
    assert isinstance(absence, ExpectNoStep) and absence.expect_no.for_ == 1.0
    assert isinstance(scenario.steps[6], WaitStep) and scenario.steps[6].wait == 0.5
    assert loaded.step_lines == (7, 9, 10, 11, 12, 13, 14, 15)


def test_count_number_means_exactly(tmp_path: Path) -> None:
    text = GOOD.replace("count: {min: 3}", "count: 3")
    step = load_scenario(write(tmp_path, text)).scenario.steps[3]
    assert isinstance(step, ExpectStep) and step.expect.count == Count(min=3, max=3)


BAD = [
    ("count: {min: 3}", "count: {min: x}", 11, "steps[3].expect.count.min", "valid integer"),
    ("count: {min: 3}", "count: {min: 3, max: 1}", 11, "steps[3].expect.count", "smaller than min"),
    ("for: 1s", "for: 1parsec", 13, "steps[5].expect_no.for", "duration"),
    ("  - wait: 500ms", "  - wiat: 500ms", 14, "steps[6]", "exactly one of"),
    ("  - wait: 500ms", "  - {wait: 1s, load: sender}", 14, "steps[6]", "exactly one of"),
    ("service: sysRecv1}", "service: sysRecv1, foo: 1}", 4, "drivers.receiver.foo", "unknown key"),
    ("load: sender\n", "load: sendr\n", 9, "steps[1].load", "no driver named 'sendr'"),
    ("expect_status: STATUS_OBJECT_NAME_NOT_FOUND", "expect_status: STATUS_NOPE", 8, "steps[0].expect_status", "NTSTATUS"),
    ("image: receiver.sys", "image: ../x.sys", 4, "drivers.receiver.image", "no folders"),
    ("service: sysRecv1}", "service: 'a b'}", 4, "drivers.receiver.service", "plain name"),
    ("service: sysRecv1}", "service: sysTest}", 4, "drivers.receiver.service", "already used by driver 'sender'"),
    ('{line: "[sysRecv1]:get notify ulType:(1)\\tulValue:(hello)", ', "{", 11, "steps[3].expect", "exactly one of 'line'"),
    ("match: 'sysRecv1\\]", "match: 'sysRecv1[", 13, "steps[5].expect_no.match", "regular expression"),
    ("name: a receiver", "nam: a receiver", 1, "name", "required key is missing"),
    ("PeriodMs: 200", "PeriodMs: -1", 3, "drivers.sender.parameters", "REG_DWORD"),
    ("PeriodMs: 200", "PeriodMs: 200, PeriodMs: 300", 3, "drivers.sender.parameters.PeriodMs", "duplicate key"),
    ("timeout: 30s", "timeout: [30s]", 5, "timeout", "duration"),
]


@pytest.mark.parametrize(("old", "new", "line", "field", "message"), BAD, ids=[case[1].strip() for case in BAD])
def test_bad_files_name_line_and_field(tmp_path: Path, old: str, new: str, line: int, field: str, message: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    error = caught.value
    assert (error.line, error.field) == (line, field)
    assert message in error.message
    assert str(error).startswith(f"{path}:{line}: {field}: ")
    assert "\n" not in str(error)


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("steps:", "steps: [\n"))
    with pytest.raises(ScenarioError, match=r"case\.yaml:\d+: not valid YAML"):
        load_scenario(path)


@pytest.mark.parametrize("text", ["", "- just\n- a list\n", "plain text\n"])
def test_not_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(ScenarioError, match="expected a mapping"):
        load_scenario(write(tmp_path, text))


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")


def test_discover(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path, GOOD, "b.yaml")
    write(tmp_path / "sub", GOOD, "a.yml")
    write(tmp_path, "x", "notes.txt")
    assert [p.name for p in discover([tmp_path])] == ["b.yaml", "a.yml"]
    with pytest.raises(ScenarioError, match="no such file"):
        discover([tmp_path / "nope"])
    with pytest.raises(ScenarioError, match="not a scenario file"):
        discover([tmp_path / "notes.txt"])


def test_format_field() -> None:
    assert format_field(("steps", 2, "expect", "count")) == "steps[2].expect.count"
    assert format_field(()) == ""


def test_shipped_scenarios_are_valid() -> None:
    folder = Path(__file__).resolve().parents[2] / "scenarios"
    files = discover([folder])
    assert len(files) >= 6
    for path in files:
        load_scenario(path)


@pytest.mark.parametrize(
    ("text", "ok"), [("standard", True), ("{flags: 0x209BB}", True), ("{flags: 12}", True), ("full", False), ("{flags: zz}", False)]
)
def test_verifier_key(tmp_path: Path, text: str, ok: bool) -> None:
    path = write(tmp_path, GOOD.replace("timeout: 30s", f"timeout: 30s\nverifier: {text}"))
    if ok:
        assert load_scenario(path).scenario.verifier is not None
    else:
        with pytest.raises(ScenarioError, match=r"case\.yaml:6: verifier"):
            load_scenario(path)


@pytest.mark.parametrize("character", ["\x00", "\x01", "\x1b", "\x7f", "\ufffe"])
def test_a_control_character_is_a_scenario_error_with_its_line(tmp_path: Path, character: str) -> None:
    lines = GOOD.splitlines(keepends=True)
    lines[5] = lines[5].replace("steps", f"st{character}eps")  # line 6
    with pytest.raises(ScenarioError) as caught:
        load_scenario(write(tmp_path, "".join(lines)))
    assert caught.value.line == 6 and f"#x{ord(character):04x}" in str(caught.value)


def test_undecodable_bytes_are_a_scenario_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(GOOD.encode().replace(b"a receiver", b"a r\xe9ceiver"))
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_scenario(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0, max_value=len(GOOD)), data=st.binary(min_size=1, max_size=3), replace=st.booleans())
def test_mutated_files_load_or_are_scenario_errors(tmp_path: Path, position: int, data: bytes, replace: bool) -> None:
    raw = GOOD.encode()
    mutated = raw[:position] + data + raw[position + (len(data) if replace else 0) :]
    path = tmp_path / "mutated.yaml"
    path.write_bytes(mutated)
    try:
        load_scenario(path)
    except ScenarioError as error:
        assert str(error).startswith(str(path))
