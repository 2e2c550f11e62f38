"""pytest plugin: the checks of an ``mlwarden.toml`` as test items of the user's suite.

``pytest --mlwarden-config mlwarden.toml`` (or ``mlwarden_config = mlwarden.toml`` in
the ini file) adds one item per configured check, named ``mlwarden::<check>``. The
audit runs once per session, at the first such item, and writes its report files
to the configured output folder; each item passes or fails by its check's status and
its findings at or above ``--mlwarden-fail-on`` (default: ``[audit] fail_on``).
Checks that do not apply are skipped items; disabled checks are skipped too.

Fixtures: ``mlwarden_config`` (the validated configuration) and ``mlwarden_audit``
(the session's `AuditOutcome`).

This module is loaded in every pytest run once the entry point is registered, so it
imports nothing heavy at module level: no torch and no ``mlwarden.audit``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mlwarden.core.finding import FAIL_ON_CHOICES

if TYPE_CHECKING:
    from mlwarden.audit.runner import AuditOutcome
    from mlwarden.config import MlwardenConfig

_MAX_LISTED = 10


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlwarden", "mlwarden security audit")
    group.addoption(
        "--mlwarden-config",
        dest="mlwarden_config",
        metavar="PATH",
        default=None,
        help="run the checks of this mlwarden.toml as test items (mlwarden::<check>)",
    )
    group.addoption(
        "--mlwarden-fail-on",
        dest="mlwarden_fail_on",
        metavar="SEVERITY",
        choices=FAIL_ON_CHOICES,
        default=None,
        help="fail a check item on findings at or above this severity "
        "(default: [audit] fail_on of the config)",
    )
    parser.addini("mlwarden_config", "mlwarden.toml whose checks run as test items", default="")


class MlwardenSession:
    """The session's configuration and (once run) audit outcome, shared by items and fixtures."""

    def __init__(self, path: Path, fail_on_override: str | None) -> None:
        self.path = path
        self.fail_on_override = fail_on_override
        self._config: MlwardenConfig | None = None
        self._outcome: AuditOutcome | None = None
        self._error: Exception | None = None
        # Checks whose items survived -k/-m selection; None runs every configured check.
        self.selected: list[str] | None = None

    @property
    def config(self) -> MlwardenConfig:
        if self._config is None:
            from mlwarden.config import load_config

            config = load_config(self.path)
            if self.fail_on_override is not None:
                config.audit = config.audit.model_copy(update={"fail_on": self.fail_on_override})
            self._config = config
        return self._config

    @property
    def fail_on(self) -> str:
        return self.config.audit.fail_on

    def checks(self) -> list[tuple[str, bool]]:
        """(name, enabled) of every check the audit will consider, in config order."""
        from mlwarden.audit.runner import selected_checks

        enabled = selected_checks(self.config, None)
        disabled = [name for name, cfg in self.config.checks.items() if not cfg.enabled]
        return [(name, True) for name in enabled] + [(name, False) for name in disabled]

    def outcome(self) -> AuditOutcome:
        """Run the audit once; later calls return the same outcome (or re-raise its error)."""
        if self._error is not None:
            raise self._error
        if self._outcome is None:
            from mlwarden.audit.runner import run_audit

            try:
                self._outcome = run_audit(self.config, only=self.selected, write=True)
            except Exception as exc:  # every item of the session reports the same cause
                self._error = exc
                raise
        return self._outcome


_SESSION_KEY = pytest.StashKey[MlwardenSession | None]()


def _configured_path(config: pytest.Config) -> Path | None:
    option = config.getoption("mlwarden_config")
    if option:
        return Path(option).expanduser().resolve()  # relative to the invocation folder
    ini = str(config.getini("mlwarden_config") or "").strip()
    if ini:
        path = Path(ini).expanduser()
        return path if path.is_absolute() else (config.rootpath / path).resolve()
    return None


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mlwarden: an mlwarden audit check run as a test item")
    path = _configured_path(config)
    if path is not None and not path.is_file():
        raise pytest.UsageError(f"--mlwarden-config: configuration file '{path}' does not exist")
    config.stash[_SESSION_KEY] = (
        MlwardenSession(path, config.getoption("mlwarden_fail_on")) if path is not None else None
    )


class MlwardenConfigFile(pytest.File):
    """The ``mlwarden.toml`` as a collector whose children are its checks."""

    def collect(self) -> list[pytest.Item]:
        state = self.config.stash[_SESSION_KEY]
        assert state is not None
        return [
            MlwardenCheckItem.from_parent(
                self, name=f"mlwarden::{name}", check=name, enabled=enabled
            )
            for name, enabled in state.checks()
        ]


class CheckFailed(Exception):
    """A check's status or findings failed the gate; the message is the whole story."""


class MlwardenCheckItem(pytest.Item):
    """One audit check as a test item."""

    def __init__(self, *, check: str, enabled: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.enabled = enabled
        self.add_marker(pytest.mark.mlwarden)

    def runtest(self) -> None:
        if not self.enabled:
            pytest.skip(f"check '{self.check}' is disabled in {self.path.name}")
        state = self.config.stash[_SESSION_KEY]
        assert state is not None
        outcome = state.outcome()
        report = outcome.report
        result = next((c for c in report.checks if c.name == self.check), None)
        if result is None:
            pytest.skip(f"check '{self.check}' did not run")
        if result.status == "skipped":
            pytest.skip(f"check '{self.check}': {result.summary}")
        findings = [f for f in report.findings if f.check == self.check]
        where = ", ".join(str(p) for p in outcome.files.values()) or "no report files written"
        for finding in findings:  # visible with -rA / in JUnit properties
            self.user_properties.append((finding.id, f"{finding.severity.value}: {finding.title}"))
        if result.status == "error":
            raise CheckFailed(
                f"check '{self.check}' could not run: {result.summary}\nreport: {where}"
            )
        from mlwarden.core.verdict import check_status, fail_threshold

        threshold = fail_threshold(state.fail_on)
        if check_status(result.status, findings, threshold) == "passed":
            return
        assert threshold is not None
        offending = [f for f in findings if f.severity >= threshold]
        lines = [
            f"  [{f.severity.value}] {f.id}: {f.title}" + (f" - {f.detail}" if f.detail else "")
            for f in offending[:_MAX_LISTED]
        ]
        if len(offending) > _MAX_LISTED:
            lines.append(f"  ... and {len(offending) - _MAX_LISTED} more")
        raise CheckFailed(
            f"check '{self.check}': {len(offending)} finding(s) at or above "
            f"'{state.fail_on}' (required: none)\n" + "\n".join(lines) + f"\nreport: {where}"
        )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        from mlwarden.core.errors import MlwardenError

        if isinstance(excinfo.value, CheckFailed):
            return str(excinfo.value)
        if isinstance(excinfo.value, MlwardenError):  # input problem: one clear line
            return f"mlwarden audit could not run: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)  # type: ignore[arg-type]

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Append the audit's items (before ``-k``/``-m`` deselection, which runs after us)."""
    state = config.stash.get(_SESSION_KEY, None)
    if state is None:
        return
    from mlwarden.core.errors import MlwardenError

    collector = MlwardenConfigFile.from_parent(session, path=state.path)
    try:
        new = collector.collect()
    except MlwardenError as exc:
        raise pytest.UsageError(f"--mlwarden-config: {exc}") from None
    # Report the collection so that "collected N items" and collection plugins see them.
    config.hook.pytest_collectreport(
        report=pytest.CollectReport(collector.nodeid, "passed", None, result=list(new))
    )
    items.extend(new)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Run only the checks whose items are still selected: ``-k scan`` must not pay for
    the evasion check."""
    state = session.config.stash.get(_SESSION_KEY, None)
    if state is None:
        return
    chosen = [
        item.check for item in session.items if isinstance(item, MlwardenCheckItem) and item.enabled
    ]
    state.selected = chosen or None


def pytest_report_header(config: pytest.Config) -> str | None:
    state = config.stash.get(_SESSION_KEY, None)
    if state is None:
        return None
    return f"mlwarden: auditing {state.path}"


@pytest.fixture(scope="session")
def mlwarden_config(pytestconfig: pytest.Config) -> MlwardenConfig:
    """The validated ``mlwarden.toml`` given by ``--mlwarden-config`` or the ini."""
    state = pytestconfig.stash.get(_SESSION_KEY, None)
    if state is None:
        pytest.skip("no mlwarden configuration: pass --mlwarden-config or set mlwarden_config")
    return state.config


@pytest.fixture(scope="session")
def mlwarden_audit(pytestconfig: pytest.Config) -> AuditOutcome:
    """The session's audit outcome (runs the audit if no item has yet)."""
    state = pytestconfig.stash.get(_SESSION_KEY, None)
    if state is None:
        pytest.skip("no mlwarden configuration: pass --mlwarden-config or set mlwarden_config")
    return state.outcome()
