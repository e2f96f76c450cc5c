"""``report merge``: the reports of several runs (CI shards) joined into one folder and one report."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path

from harness.errors import ConfigError
from harness.reports import write_reports
from harness.reports.store import RESULT_FILE, ResultFormatError, load, save
from harness.runner import ScenarioResult


def relocate(result: ScenarioResult, run_dir: Path) -> ScenarioResult:
    """The result with its files (raw log, crash evidence) moved from its old folder into ``run_dir``. Pure."""
    old = result.run_dir

    def moved(path: Path) -> Path:
        return run_dir / path.relative_to(old) if path.is_relative_to(old) else path

    evidence = dataclasses.replace(result.crash_evidence, files=tuple(moved(path) for path in result.crash_evidence.files))
    raw = moved(result.raw_log_file) if result.raw_log_file is not None else None
    return dataclasses.replace(result, run_dir=run_dir, raw_log_file=raw, crash_evidence=evidence)


def merge(dirs: Sequence[Path], out: Path) -> list[ScenarioResult]:
    """Copy every scenario folder of ``dirs`` into ``out`` and write one report for all of them.

    Raises:
        ConfigError: a folder without results, an unreadable result, or the same scenario (with its image and build) twice.
    """
    merged: dict[str, ScenarioResult] = {}
    origin: dict[str, Path] = {}
    for folder in dirs:
        files = sorted((folder / "scenarios").glob(f"*/{RESULT_FILE}"))
        if not files:
            raise ConfigError(f"{folder}: no scenario results (scenarios/*/{RESULT_FILE}): not a report folder of this harness")
        for path in files:
            try:
                result = load(path)
            except ResultFormatError as error:
                raise ConfigError(str(error)) from None
            if result.key in merged:
                raise ConfigError(f"{result.key} is in both {origin[result.key]} and {folder}: shards must not overlap")
            # The folder as it is now (a CI artifact unpacked elsewhere), not as the run recorded it.
            result = dataclasses.replace(result, run_dir=path.parent)
            target = out / "scenarios" / result.key
            if target.resolve() != path.parent.resolve():
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(path.parent, target)
            merged[result.key] = relocate(result, target)
            origin[result.key] = folder
    results = [merged[key] for key in sorted(merged)]
    for result in results:
        save(result)
    write_reports(results, out)
    return results
