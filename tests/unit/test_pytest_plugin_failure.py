"""What the pytest plugin prints for a scenario that did not pass."""

from __future__ import annotations

from pathlib import Path

from harness.kernel.events import LogLine
from harness.pytest_plugin import failure_text
from harness.runner import ScenarioResult


def test_a_failure_shows_each_nearby_line_with_its_source_as_the_reports_do(tmp_path: Path) -> None:
    result = ScenarioResult(id="10-ioctl", name="ioctl", path=Path("scenarios/10.yaml"), guest="wine", run_dir=tmp_path)
    result.outcome, result.message = "failed", "step 3 (line 12) expect_order: the program's line came first"
    result.context = [LogLine(1.25, "kcbioctl: got 5 bytes"), LogLine(1.5, "client: sent 5 bytes", "ioctl-client.exe:stdout")]
    text = failure_text(result)
    assert text.splitlines()[0] == "failed: step 3 (line 12) expect_order: the program's line came first"
    assert "  +1.250s kcbioctl: got 5 bytes" in text.splitlines()  # a kernel-log line as it is
    assert "  +1.500s [ioctl-client.exe:stdout] client: sent 5 bytes" in text.splitlines()  # any other with its source
    assert text.splitlines()[-1] == f"raw kernel log: {result.raw_log}"
