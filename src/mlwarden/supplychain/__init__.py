"""Model-file supply-chain scanner: static pickle analysis and container checks.

Nothing in this package imports torch or unpickles anything: it reads bytes.

>>> from mlwarden.supplychain import scan_path
>>> result = scan_path("models/teacher")
>>> result.verdict, [(f.path, f.verdict) for f in result.files]
"""

from mlwarden.supplychain.context import ScanLimits
from mlwarden.supplychain.pickle_reader import PickleLimits
from mlwarden.supplychain.policy import ImportClass, Policy, classify_import
from mlwarden.supplychain.results import RULES, FileScan, ScanResult, Verdict
from mlwarden.supplychain.scanner import (
    ensure_scanned,
    iter_files,
    scan_file,
    scan_path,
    sha256_file,
)

__all__ = [
    "RULES",
    "FileScan",
    "ImportClass",
    "PickleLimits",
    "Policy",
    "ScanLimits",
    "ScanResult",
    "Verdict",
    "classify_import",
    "ensure_scanned",
    "iter_files",
    "scan_file",
    "scan_path",
    "sha256_file",
]
