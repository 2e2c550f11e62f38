"""Read a saved JSON report back, with errors that say what is wrong and where.

``mlwarden report render`` re-renders reports that CI jobs saved earlier; a truncated
upload or a hand-edited file must produce one clear line, not a pydantic dump.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from mlwarden.core.errors import InputError
from mlwarden.core.findings import Report

#: Reports larger than this are refused rather than read into memory.
MAX_REPORT_BYTES = 256 * 1024 * 1024


def read_report(path: str | Path) -> Report:
    """The `Report` saved in ``path`` (as written by ``--format json``)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"report file '{path}' does not exist")
    if not path.is_file():
        raise InputError(f"report path '{path}' is not a file")
    size = path.stat().st_size
    if size > MAX_REPORT_BYTES:
        raise InputError(
            f"report file '{path}' is {size / 2**20:.0f} MiB; the limit is "
            f"{MAX_REPORT_BYTES // 2**20} MiB"
        )
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise InputError(f"report file '{path}' is not UTF-8 text (is it a JSON report?)") from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"report file '{path}' is not valid JSON: {exc.msg.removesuffix(' at')} "
            f"(line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise InputError(f"report file '{path}' is nested too deeply to be a report") from None
    if not isinstance(data, dict):
        raise InputError(
            f"report file '{path}' holds a JSON {type(data).__name__}, not an object; "
            "expected a report written with --format json"
        )
    try:
        return Report.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise InputError(
            f"report file '{path}' is not a mlwarden report: {where}: {first['msg']}{more}"
        ) from None
