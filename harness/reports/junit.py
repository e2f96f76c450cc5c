"""JUnit XML, one test case per scenario, as CI systems read it."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from harness.reports.timeline import context_line, render_timeline
from harness.runner import ScenarioResult

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: str) -> str:
    """Kernel-log text may hold bytes XML 1.0 cannot carry."""
    return _NOT_XML.sub("\ufffd", text)


def junit_xml(results: Sequence[ScenarioResult], suite: str = "kcb-harness") -> ET.Element:
    """The <testsuites> element for the results."""
    failures = sum(1 for r in results if r.outcome == "failed")
    errors = sum(1 for r in results if r.outcome not in ("passed", "failed"))
    total_time = sum(r.duration for r in results)
    root = ET.Element("testsuites", tests=str(len(results)), failures=str(failures), errors=str(errors), time=f"{total_time:.3f}")
    node = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(results)),
        failures=str(failures),
        errors=str(errors),
        skipped="0",
        time=f"{total_time:.3f}",
    )
    for result in results:
        qualifiers = "".join(f" [{part}]" for part in (result.image, result.build) if part)
        case = ET.SubElement(
            node,
            "testcase",
            classname=f"scenarios.{result.key}",
            name=_clean(result.name + qualifiers),
            file=str(result.path),
            time=f"{result.duration:.3f}",
        )
        properties = ET.SubElement(case, "properties")
        ET.SubElement(properties, "property", name="outcome", value=result.outcome)
        ET.SubElement(properties, "property", name="guest", value=result.guest)
        for name, value in (("image", result.image), ("build", result.build), ("host", result.host)):
            if value:
                ET.SubElement(properties, "property", name=name, value=value)
        ET.SubElement(properties, "property", name="raw_log", value=str(result.raw_log))
        if result.crash is not None and result.crash.code is not None:
            ET.SubElement(properties, "property", name="crash_code", value=f"0x{result.crash.code:08X}")
        if result.signature is not None:
            ET.SubElement(properties, "property", name="signature", value=_clean(result.signature))
        if result.outcome == "failed":
            ET.SubElement(case, "failure", message=_clean(result.message), type="failed").text = _clean(_context(result))
        elif result.outcome != "passed":
            ET.SubElement(case, "error", message=_clean(result.message), type=result.outcome).text = _clean(_context(result))
        evidence = result.crash_evidence
        if evidence.note:
            ET.SubElement(properties, "property", name="crash_evidence", value=_clean(evidence.note))
        # Jenkins' JUnit attachments convention: one [[ATTACHMENT|path]] line per file.
        attachments = "".join(f"[[ATTACHMENT|{path.resolve()}]]\n" for path in evidence.files)
        ET.SubElement(case, "system-out").text = _clean(attachments + render_timeline(result))
    return root


def _context(result: ScenarioResult) -> str:
    lines = "".join(f"  {context_line(line)}\n" for line in result.context)
    text = f"{result.message}\n{lines}" if lines else result.message
    if result.triage is not None:
        text += ("" if text.endswith("\n") else "\n") + result.triage.render()
    return text


def write_junit(results: Sequence[ScenarioResult], path: Path) -> None:
    tree = ET.ElementTree(junit_xml(results))
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)
