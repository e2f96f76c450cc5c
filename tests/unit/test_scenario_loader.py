"""Scenario files: the users' format, and errors that name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import ScenarioError
from harness.scenario.loader import discover, format_field, load_scenario
from harness.scenario.model import MAX_ARGUMENT_CHARS, Count, ExpectNoStep, ExpectOrderStep, ExpectStep, LoadStep, RunStep, WaitStep

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


# -- run: steps and the source of expectations ----------------------------------------------------------------------

RUN = """\
name: a program talks to the driver
drivers:
  ioctl: {image: kcbioctl.sys, service: kcbIoctl}
steps:
  - load: ioctl
  - run: ioctl-client.exe
    args: ["hello", 42, "a b", 'x"y']
    expect_exit: 3
    timeout: 10s
  - expect_order:
      lines:
        - {match: 'kcbioctl: got IOCTL .* "hello"', source: kernel}
        - {line: "client: sent 5 bytes", source: ioctl-client.exe}
  - expect: {line: "client: sent 5 bytes", source: program}
  - expect_no: {match: "error", source: ioctl-client.exe:stderr}
  - run: ioctl-client.exe
"""


def test_a_run_step_loads_with_its_arguments_exit_code_and_timeout(tmp_path: Path) -> None:
    loaded = load_scenario(write(tmp_path, RUN))
    run = loaded.scenario.steps[1]
    assert isinstance(run, RunStep)
    assert run.run == "ioctl-client.exe" and run.args == ("hello", "42", "a b", 'x"y')
    assert run.expect_exit == 3 and run.timeout == 10.0
    default = loaded.scenario.steps[5]
    assert isinstance(default, RunStep) and (default.args, default.expect_exit, default.timeout) == ((), 0, None)
    assert loaded.step_lines == (5, 6, 10, 14, 15, 16)
    assert loaded.scenario.programs is None


def test_expectations_keep_their_source(tmp_path: Path) -> None:
    steps = load_scenario(write(tmp_path, RUN)).scenario.steps
    order, presence, absence = steps[2], steps[3], steps[4]
    assert isinstance(order, ExpectOrderStep) and [p.source for p in order.expect_order.lines] == ["kernel", "ioctl-client.exe"]
    assert isinstance(presence, ExpectStep) and presence.expect.source == "program"
    assert isinstance(absence, ExpectNoStep) and absence.expect_no.source == "ioctl-client.exe:stderr"
    assert presence.expect.describe() == "line 'client: sent 5 bytes' from program"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("255", 255),
        ("0xC0000005", 0xC0000005),
        ("STATUS_ACCESS_VIOLATION", 0xC0000005),
        ("-1", 0xFFFFFFFF),
        ("4294967295", 0xFFFFFFFF),
    ],
)
def test_expect_exit_takes_numbers_hex_and_status_names(tmp_path: Path, value: str, expected: int) -> None:
    step = load_scenario(write(tmp_path, RUN.replace("expect_exit: 3", f"expect_exit: {value}"))).scenario.steps[1]
    assert isinstance(step, RunStep) and step.expect_exit == expected


@pytest.mark.parametrize("source", ["kernel", "program", "stdout", "stderr", "serial", "IOCTL-CLIENT.EXE", "ioctl-client.exe:stdout"])
def test_every_documented_source_loads(tmp_path: Path, source: str) -> None:
    step = load_scenario(write(tmp_path, RUN.replace("source: program}", f"source: {source}}}"))).scenario.steps[3]
    assert isinstance(step, ExpectStep) and step.expect.source == source


def test_programs_folder_key(tmp_path: Path) -> None:
    loaded = load_scenario(write(tmp_path, RUN.replace("steps:", "programs: tools\nsteps:")))
    assert loaded.scenario.programs == "tools"


BAD_RUN = [
    (
        "  - run: ioctl-client.exe\n    args",
        "  - run: ../ioctl-client.exe\n    args",
        6,
        "steps[1].run",
        "a program's file name such as ioctl-client.exe",
    ),
    ("  - run: ioctl-client.exe\n    args", "  - run: ioctl-client.bat\n    args", 6, "steps[1].run", "ending in .exe"),
    ("  - run: ioctl-client.exe\n    args", "  - run: [x.exe]\n    args", 6, "steps[1].run", "a program's file name"),
    ('args: ["hello", 42', 'args: ["hel\\tlo", 42', 7, "steps[1].args[0]", "control character"),
    ('args: ["hello", 42', "args: [true, 42", 7, "steps[1].args[0]", "expected text or a whole number"),
    ('args: ["hello", 42', "args: [{a: 1}, 42", 7, "steps[1].args[0]", "expected text or a whole number"),
    ('args: ["hello", 42, "a b", \'x"y\']', "args: hello", 7, "steps[1].args", "a list"),
    ("expect_exit: 3", "expect_exit: 4294967296", 8, "steps[1].expect_exit", "exit code"),
    ("expect_exit: 3", "expect_exit: STATUS_NOPE", 8, "steps[1].expect_exit", "exit code"),
    ("expect_exit: 3", "expect_exit: -2147483649", 8, "steps[1].expect_exit", "exit code"),
    ("timeout: 10s", "timeout: soon", 9, "steps[1].timeout", "duration"),
    ("timeout: 10s", "timout: 10s", 9, "steps[1].timout", "unknown key"),
    ("source: kernel}", "source: kernal}", 12, "steps[2].expect_order.lines[0].source", "expected kernel, program, stdout, stderr"),
    ("source: program}", "source: prog.exe}", 14, "steps[3].expect.source", "no run step runs 'prog.exe' (programs run: ioctl-client.exe)"),
    ("source: ioctl-client.exe:stderr}", "source: ioctl-client.exe:stdin}", 15, "steps[4].expect_no.source", "expected kernel"),
    ("source: ioctl-client.exe}", "source: other.exe}", 13, "steps[2].expect_order.lines[1].source", "no run step runs 'other.exe'"),
    ("source: program}", "source: 7}", 14, "steps[3].expect.source", "valid string"),
    ("steps:", "programs: ''\nsteps:", 4, "programs", "a folder"),
]


@pytest.mark.parametrize(("old", "new", "line", "field", "message"), BAD_RUN, ids=[case[1].strip() for case in BAD_RUN])
def test_bad_run_steps_and_sources_name_line_and_field(tmp_path: Path, old: str, new: str, line: int, field: str, message: str) -> None:
    assert old in RUN
    path = write(tmp_path, RUN.replace(old, new, 1))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    error = caught.value
    assert (error.line, error.field) == (line, field), str(error)
    assert message in error.message, str(error)
    assert str(error).startswith(f"{path}:{line}: {field}: ")


def test_arguments_have_a_total_limit_that_fits_every_guest(tmp_path: Path) -> None:
    fits = ", ".join(['"' + "a" * 100 + '"'] * (MAX_ARGUMENT_CHARS // 100))
    load_scenario(write(tmp_path, RUN.replace('"hello", 42, "a b", \'x"y\'', fits)))
    too_long = fits + ', "b"'
    with pytest.raises(ScenarioError) as caught:
        load_scenario(write(tmp_path, RUN.replace('"hello", 42, "a b", \'x"y\'', too_long)))
    assert (caught.value.line, caught.value.field) == (7, "steps[1].args")
    assert f"at most {MAX_ARGUMENT_CHARS} characters" in caught.value.message


def test_a_source_on_a_scenario_without_run_steps_says_so(tmp_path: Path) -> None:
    text = GOOD.replace("for: 1s}", "for: 1s, source: tool.exe}")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(write(tmp_path, text))
    assert caught.value.field == "steps[5].expect_no.source" and "(the scenario has no run steps)" in caught.value.message
