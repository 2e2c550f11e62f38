"""Continuous stress testing in users' own CI: assertion helpers and a pytest plugin.

Users who already run pytest get the same gates as ``mlwarden audit`` inside their
test suite::

    from mlwarden.testing import assert_accuracy, assert_robust, assert_scan_safe

    def test_model_is_robust(model, x_test, y_test):
        assert_robust(model, x_test, y_test, eps=0.1, min_robust_accuracy=0.5)

The pytest plugin (`mlwarden.testing.plugin`) turns the checks of an
``mlwarden.toml`` into test items. Names load lazily: this package is imported by the
plugin in every pytest run, so it must not import torch.
"""

from __future__ import annotations

from mlwarden._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "assert_accuracy": "mlwarden.testing.assertions",
    "assert_robust": "mlwarden.testing.assertions",
    "assert_scan_safe": "mlwarden.testing.assertions",
    "assert_no_membership_leak": "mlwarden.testing.assertions",
    "assert_no_backdoor": "mlwarden.testing.assertions",
    "assert_audit_passes": "mlwarden.testing.assertions",
    "as_model": "mlwarden.testing.models",
}


__getattr__ = lazy_exports(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
