"""``mlwarden transfer``: train a student from a teacher with a chosen strategy, then audit it.

A thin adapter: the flags override `TransferSettings` (where every default lives) and
`run_transfer` does the work, the same runner the ``transfer`` audit check calls. A flag
left out keeps the settings' default. ``--student`` audits a student trained elsewhere
instead of training one (the check's ``teacher`` mode).

A Hugging Face model folder as ``--teacher`` takes the text path: ``--data`` is labelled
text (``--text-column``/``--label-column``), the students are sequence classifiers and
``--student-out`` writes a Hugging Face folder (docs/text.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mlwarden.cli.common import (
    AllowOption,
    ConfigOption,
    DeviceOption,
    FactoryOption,
    FailOnOption,
    FormatOption,
    OutputFormat,
    OutputOption,
    ProgressOption,
    SeedOption,
    SpecOption,
)


def transfer_command(
    teacher: str = typer.Option(
        ...,
        "--teacher",
        "-t",
        help="Teacher model (.pt2, weights with --factory, or a Hugging Face model folder).",
    ),
    data: str = typer.Option(
        ...,
        "--data",
        "-d",
        help="Student training data (.npz, .npy, .csv, folder, digits; labelled text "
        ".jsonl/.csv/.tsv for a model folder).",
    ),
    text_column: str = typer.Option(
        "text", "--text-column", help="Text teachers: the column of the texts."
    ),
    label_column: str = typer.Option(
        "label", "--label-column", help="Text teachers: the column of the labels."
    ),
    student: str | None = typer.Option(
        None,
        "--student",
        help="Audit this student of the teacher (same architecture, --factory) instead of "
        "training one; --data is then all audit data.",
    ),
    strategy: str | None = typer.Option(
        None,
        "--strategy",
        "-s",
        help="linear_probe, last_k, full, full_reinit, fineprune, dp (DP-SGD), adversarial (PGD "
        "training at --eps), trades (tensor students), freelb, trigger_prune (text students; "
        "trigger_prune needs a known trigger), or 'compare'.",
    ),
    epsilon: float | None = typer.Option(
        None, "--epsilon", help="Privacy budget of strategy dp (DP-SGD, extra 'privacy')."
    ),
    k: int | None = typer.Option(None, "--k", help="Blocks trained by strategy last_k."),
    epochs: int | None = typer.Option(None, "--epochs", help="Training epochs."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate."),
    test_fraction: float | None = typer.Option(
        None, "--test-fraction", help="Held-out share of --data for the audit."
    ),
    eps: float | None = typer.Option(
        None, "--eps", help="L-inf radius of the PGD examples crafted on the teacher."
    ),
    samples: int | None = typer.Option(None, "--samples", help="Audit at most N samples."),
    scan_steps: int | None = typer.Option(
        None, "--scan-steps", help="Steps of the teacher trigger scan (default: the detector's)."
    ),
    trigger: Path | None = typer.Option(
        None,
        "--trigger",
        help="A known trigger to measure (.npz with arrays 'mask' and 'pattern'), instead of "
        "the one the teacher scan (as `backdoor detect`) finds; with --target.",
    ),
    trigger_text: str | None = typer.Option(
        None,
        "--trigger-text",
        help="Text teachers: a phrase to insert into held-out texts and measure on the "
        "student (at --target, else at the class it sends most texts to).",
    ),
    target: int | None = typer.Option(
        None, "--target", help="Target class of --trigger or --trigger-text."
    ),
    student_out: Path | None = typer.Option(
        None,
        "--student-out",
        help="Write the trained student here (.pt2; a Hugging Face folder for a text teacher).",
    ),
    seed: int = SeedOption,
    factory: str | None = FactoryOption,
    spec: Path | None = SpecOption,
    config: Path | None = ConfigOption,
    allow: list[str] = AllowOption,
    device: str = DeviceOption,
    fmt: OutputFormat = FormatOption,
    output: Path | None = OutputOption,
    fail_on: str = FailOnOption,
    progress: bool = ProgressOption,
) -> None:
    """Fine-tune a student from --teacher (or take --student), then audit it.

    The audit: backdoor inheritance (the ASR of the teacher's trigger above a clean
    baseline), adversarial transfer and divergence from the teacher.
    """
    from mlwarden.cli.common import emit_report, fail_threshold, load_subject
    from mlwarden.cli.flags import settings_from_flags
    from mlwarden.cli.ui import progress_bars
    from mlwarden.core.errors import InputError, ParameterError
    from mlwarden.core.findings import Report
    from mlwarden.evaluation.transfer import TransferSettings, require_teacher, run_transfer

    fail_threshold(fail_on)
    if trigger is not None and trigger_text is not None:
        raise ParameterError("give --trigger (tensor models) or --trigger-text (text), not both")
    if (trigger is None) != (target is None) and trigger_text is None:
        raise ParameterError("--trigger and --target go together: give both or neither")
    settings = settings_from_flags(
        TransferSettings,
        {
            "strategy": strategy,
            "epochs": epochs,
            "lr": lr,
            "k": k,
            "epsilon": epsilon,
            "test_fraction": test_fraction,
            "eps": eps,
            "samples": samples,
            "scan_steps": scan_steps,
            "trigger": None if trigger is None else str(trigger),
            "trigger_text": trigger_text,
            "target": target,
        },
    )
    if student_out is not None and (student is not None or settings.strategy == "compare"):
        raise ParameterError(
            "--student-out writes a student trained here: not with --student or --strategy compare"
        )
    from mlwarden.io.hf import is_hf_folder

    text = is_hf_folder(teacher)
    _refuse_mixed(teacher, data, text)
    if text and student_out is not None and student_out.exists():
        if not student_out.is_dir() or any(student_out.iterdir()):  # refused before training
            raise ParameterError(f"--student-out '{student_out}' exists and is not an empty folder")
    if text:
        loaded, dataset = _load_text_subject(
            teacher,
            data,
            text_column,
            label_column,
            factory=factory,
            spec=spec,
            config=config,
            device=device,
            allow=allow,
        )
    else:
        loaded, dataset = load_subject(
            teacher,
            data,
            factory=factory,
            spec=spec,
            config=config,
            device=device,
            allow=allow,
            samples=None,
        )
    assert dataset is not None
    given = None
    if student is not None and text:
        from mlwarden.io.models import load_model

        given = load_model(student, device=device, allow=tuple(allow))
    elif student is not None:
        from mlwarden.io.models import load_model

        require_teacher(loaded, trains=False)  # refused before the student is loaded
        given = load_model(
            student, factory=factory, spec=loaded.spec, device=device, allow=tuple(allow)
        )
    comparing = settings.strategy == "compare" and student is None
    report = Report(
        title="mlwarden transfer: strategy comparison" if comparing else "mlwarden transfer audit"
    )
    with progress_bars(progress) as bar:
        run = run_transfer(
            loaded,
            dataset,
            settings,
            report=report,
            student=given,
            seed=seed,
            subject=str(student or student_out or "student"),
            progress=bar,
        )
    report.subject.update(
        {"teacher": teacher, "data": data, "test_samples": run.test_samples, "seed": seed}
    )
    if student is not None:
        report.subject["student"] = student
    else:
        report.subject.setdefault("epochs", settings.epochs)  # the text path sets its own
        report.subject.update(strategy=settings.strategy, train_samples=run.train_samples)
    if run.student is not None and student_out is not None and text:
        from mlwarden.io.hf import save_text_classifier

        save_text_classifier(run.student, student_out)
        report.subject["student"] = str(student_out)
    elif run.student is not None and student_out is not None:
        from mlwarden.io.export import save_pt2

        try:
            saved = save_pt2(run.student, student_out)
        except InputError:
            # a student rebuilt from an unflattened .pt2 teacher exports only with a static
            # batch size (the loader pads batches for such files)
            saved = save_pt2(run.student, student_out, dynamic_batch=False)
        report.subject["student"] = str(saved)
    if fmt is OutputFormat.text and output is None:  # the tables are the result: print them
        from rich.console import Console

        from mlwarden.cli.ui import console
        from mlwarden.report.terminal import table_renderable

        # a log or pipe is not a narrow terminal: give the eight columns room to stay whole
        out = console if console.is_terminal else Console(width=max(console.width, 120))
        for table in report.tables:
            out.print(table_renderable(table))
    raise typer.Exit(emit_report(report, fmt, output, fail_on))


def _looks_like_text(data: str) -> bool:
    from mlwarden.io.text_builtin import is_builtin_text
    from mlwarden.io.text_data import TEXT_SUFFIXES

    path = Path(data)
    if not path.exists():
        return is_builtin_text(data)
    return path.suffix.lower() in (".jsonl", ".tsv") or (
        path.suffix.lower() in TEXT_SUFFIXES and not _numeric_csv(path)
    )


def _numeric_csv(path: Path) -> bool:
    """A tensor .csv holds numbers (features and a label column), a text .csv words."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            handle.readline()  # the header
            row = handle.readline()
    except OSError:
        return True  # let the loader say what is wrong with the file
    cells = [c.strip() for c in row.split(",") if c.strip()]
    try:
        [float(c) for c in cells]
    except ValueError:
        return False
    return True


def _refuse_mixed(teacher: str, data: str, text: bool) -> None:
    """One line for a text teacher with tensor data, or a tensor teacher with text."""
    from mlwarden.core.errors import ParameterError

    if text and Path(data).suffix.lower() in (".npz", ".npy", ".pt", ".pth"):
        raise ParameterError(
            f"--teacher '{teacher}' is a Hugging Face model folder (text); --data '{data}' is "
            "tensor data: give labelled text (.jsonl, .csv, .tsv)"
        )
    if not text and _looks_like_text(data):
        raise ParameterError(
            f"--data '{data}' is text; --teacher '{teacher}' is not a Hugging Face model folder "
            "(a text teacher is a folder with config.json)"
        )


def _load_text_subject(
    teacher: str,
    data: str,
    text_column: str,
    label_column: str,
    *,
    factory: str | None,
    spec: Path | None,
    config: Path | None,
    device: str,
    allow: list[str],
) -> tuple[Any, Any]:
    """The text teacher (the folder gated, under the configuration's signing policy) and its
    labelled text, checked against the teacher's classes if it has any."""
    from mlwarden.core.errors import ParameterError
    from mlwarden.io.models import load_model
    from mlwarden.io.text_data import load_text_data
    from mlwarden.supplychain.signing import policy_from_config, using_policy

    if factory is not None or spec is not None:
        raise ParameterError(
            "--factory and --spec apply to tensor models; a model folder is its own spec"
        )
    policy = policy_from_config(config) if config is not None else None
    with using_policy(policy):
        loaded = load_model(teacher, device=device, allow=tuple(allow))
    dataset = load_text_data(
        data,
        text_column=text_column,
        label_column=label_column,
        class_names=loaded.spec.class_names,
    )
    return loaded, dataset
