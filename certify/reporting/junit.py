"""Gate results as JUnit XML, for CI systems that show test reports."""

from __future__ import annotations

from typing import Any, Sequence

from .strings import gate_rows


def gate_junit(reports: Sequence[Any]) -> str:
    """JUnit XML: one testsuite per model, one testcase per gate, <failure> for failed gates."""
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites", name="lipcert gates",
                      tests=str(sum(len(r.rows) for r in reports)),
                      failures=str(sum(len(r.failed) for r in reports)))
    for rep in reports:
        suite = ET.SubElement(root, "testsuite", name=rep.name, tests=str(len(rep.rows)),
                              failures=str(len(rep.failed)), errors="0", skipped="0")
        for r, row in zip(rep.rows, gate_rows([rep])):
            case = ET.SubElement(suite, "testcase", classname=f"lipcert.{rep.name}", name=r.gate)
            if not r.passed:
                failure = ET.SubElement(case, "failure", message=f"{r.gate}: {row[2]} {r.op} {row[4]} is false",
                                        type="GateFailed")
                failure.text = row[6] or None
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
