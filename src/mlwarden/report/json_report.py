"""JSON: the lossless format every other format can be re-rendered from.

``mlwarden report render report.json --format html`` reads it back with
`mlwarden.core.findings.Report.from_json`.
"""

from __future__ import annotations

from mlwarden.core.findings import Report
from mlwarden.report.formatting import jsonable


def to_json(report: Report) -> str:
    """The report as indented JSON (pydantic's own serialisation, so it round-trips).

    Evidence values pydantic cannot serialise (a ``numpy.float32`` a check stored)
    are converted by `jsonable` instead of failing the whole report.
    """
    return report.model_dump_json(indent=2, fallback=jsonable) + "\n"
