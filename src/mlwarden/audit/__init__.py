"""`mlwarden audit`: run the checks a config names and collect one `Report`.

Checks register themselves with `register_check`; the registry imports the modules
listed in `CHECK_MODULES` on first use, so adding a check means writing one module
and adding one line there.
"""

from mlwarden.audit.registry import (
    AuditContext,
    CheckConfig,
    CheckSkipped,
    CheckSpec,
    available_checks,
    register_check,
)

__all__ = [
    "AuditContext",
    "CheckConfig",
    "CheckSkipped",
    "CheckSpec",
    "available_checks",
    "register_check",
]
