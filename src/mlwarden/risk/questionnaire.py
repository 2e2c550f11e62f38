"""The risk questionnaire: a versioned pydantic schema for the answers YAML file.

The schema is the single source of truth: the interactive ``mlwarden risk init``,
the commented template, the JSON Schema for editors and the validation of the
rules file are all derived from these models, so a new question is one field here.

Answers describe the system before code is written (Threat modelling is principle
1.2 of the UK NCSC principles for the security of machine learning).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from mlwarden.core.errors import InputError

SCHEMA_VERSION = 1
MAX_ANSWERS_BYTES = 256 * 1024

ModelSource = Literal["trained-in-house", "pretrained-public", "pretrained-vendor"]
TransferLearning = Literal["none", "linear-probe", "partial-fine-tune", "full-fine-tune"]
ModelFormat = Literal["safetensors", "torch-export", "onnx", "pickle", "unknown"]
DataSource = Literal["internal", "public", "user-submitted", "scraped", "third-party"]
Retraining = Literal["none", "periodic", "continuous-from-production"]
Exposure = Literal["public-api", "partner-api", "internal-api", "on-device", "batch"]
Outputs = Literal["label", "top-k", "scores", "logits"]
Authentication = Literal["none", "api-key", "oauth", "mtls"]
Level = Literal["low", "medium", "high"]


def _q(question: str, why: str, example: Any) -> dict[str, Any]:
    """Metadata that turns a field into a question (prompt, explanation, template value)."""
    return {"question": question, "why": why, "example": example}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SystemAnswers(_Section):
    name: str = Field(
        "ML system",
        min_length=1,
        json_schema_extra=_q(
            "What is the system called?",
            "Used as the title of the threat model.",
            "digit-reader",
        ),
    )
    owner: str = Field(
        "",
        json_schema_extra=_q(
            "Who owns the risk (team or person)?",
            "Every threat register needs someone who accepts or treats the risks.",
            "ml-platform team",
        ),
    )


class ModelAnswers(_Section):
    source: ModelSource = Field(
        json_schema_extra=_q(
            "Where does the model (or the teacher it is fine-tuned from) come from?",
            "A model from outside can carry a backdoor, or code that runs when it is loaded.",
            "pretrained-public",
        )
    )
    transfer_learning: TransferLearning = Field(
        "none",
        json_schema_extra=_q(
            "How is the pretrained model adapted to your task?",
            "Frozen features (a linear probe) keep the teacher's backdoors and let attacks "
            "crafted on the public teacher transfer to your model.",
            "linear-probe",
        ),
    )
    format: ModelFormat = Field(
        "unknown",
        json_schema_extra=_q(
            "In which file format do you receive or store the model?",
            "Pickle-based files (.pt, .pth, .pkl, .bin) can run arbitrary code when loaded.",
            "pickle",
        ),
    )


class DataAnswers(_Section):
    sources: list[DataSource] = Field(
        min_length=1,
        json_schema_extra=_q(
            "Where does the training data come from? (one or more)",
            "Data you do not control can be poisoned to plant backdoors or skew the model.",
            ["internal"],
        ),
    )
    personal: StrictBool = Field(
        json_schema_extra=_q(
            "Does the training data contain personal data?",
            "A model can leak whether a person was in its training set (membership inference).",
            True,
        )
    )
    retraining: Retraining = Field(
        "none",
        json_schema_extra=_q(
            "Is the model retrained after deployment?",
            "Retraining on production traffic lets users steer what the model learns.",
            "none",
        ),
    )


class DeploymentAnswers(_Section):
    exposure: Exposure = Field(
        json_schema_extra=_q(
            "Who can send inputs to the model, and how?",
            "The wider the access, the more attackers can query, probe and copy the model; "
            "a model shipped on-device gives attackers the weights themselves.",
            "public-api",
        )
    )
    outputs: Outputs = Field(
        json_schema_extra=_q(
            "What does a prediction return?",
            "Scores and logits leak far more than a label: they speed up model stealing, "
            "membership inference and black-box evasion.",
            "scores",
        )
    )
    authentication: Authentication = Field(
        json_schema_extra=_q(
            "How are callers authenticated?",
            "Anonymous callers cannot be rate-limited, audited or cut off individually.",
            "none",
        )
    )
    rate_limited: StrictBool = Field(
        json_schema_extra=_q(
            "Is the number of queries per caller limited?",
            "Model stealing and black-box attacks need thousands of queries.",
            False,
        )
    )


class ImpactAnswers(_Section):
    integrity: Level = Field(
        json_schema_extra=_q(
            "Impact if the model's predictions are manipulated?",
            "Sets the impact of evasion, poisoning and backdoors.",
            "high",
        )
    )
    confidentiality: Level = Field(
        json_schema_extra=_q(
            "Impact if the model or its training data leak?",
            "Sets the impact of model stealing, membership inference and inversion.",
            "medium",
        )
    )
    availability: Level = Field(
        json_schema_extra=_q(
            "Impact if the model is unavailable or too slow?",
            "Sets the impact of denial of service.",
            "medium",
        )
    )


class Answers(_Section):
    """Everything the risk engine needs to know about a system (schema version 1)."""

    version: Literal[1] = Field(
        SCHEMA_VERSION,
        json_schema_extra=_q(
            "Schema version of this answers file.", "Lets mlwarden read old files.", 1
        ),
    )
    system: SystemAnswers = Field(default_factory=SystemAnswers)
    model: ModelAnswers
    data: DataAnswers
    deployment: DeploymentAnswers
    impact: ImpactAnswers

    def value(self, key: str) -> Any:
        """The answer at a dotted key such as ``deployment.exposure``."""
        obj: Any = self
        for part in key.split("."):
            obj = getattr(obj, part)
        return obj

    def flat(self) -> dict[str, Any]:
        """All answers as ``{dotted key: value}`` (the form rules match against)."""
        return {q.key: self.value(q.key) for q in QUESTIONS.values()}


# -- questions derived from the schema --------------------------------------------------


@dataclass(frozen=True)
class Question:
    """One answer of the questionnaire, as the prompt and the validators see it."""

    key: str
    kind: Literal["choice", "multi", "bool", "text", "int"]
    question: str
    why: str
    choices: tuple[str, ...]
    required: bool
    default: Any
    example: Any

    @property
    def allowed(self) -> str:
        """Human description of the allowed values."""
        if self.kind == "bool":
            return "true | false"
        if self.kind in ("choice", "multi"):
            text = " | ".join(self.choices)
            return f"a list of {text}" if self.kind == "multi" else text
        return "an integer" if self.kind == "int" else "text"


def _kind(annotation: Any) -> tuple[str, tuple[str, ...]]:
    if get_origin(annotation) is list:
        (inner,) = get_args(annotation)
        return "multi", tuple(get_args(inner))
    if get_origin(annotation) is Literal:
        args = get_args(annotation)
        return ("int" if all(isinstance(a, int) for a in args) else "choice"), tuple(
            str(a) for a in args
        )
    if annotation in (bool, StrictBool) or getattr(annotation, "__origin__", None) is bool:
        return "bool", ()
    if annotation is str:
        return "text", ()
    # StrictBool is Annotated[bool, Strict()]
    if get_args(annotation) and get_args(annotation)[0] is bool:
        return "bool", ()
    raise TypeError(f"unsupported questionnaire field type {annotation!r}")


def _build_questions() -> dict[str, Question]:
    questions: dict[str, Question] = {}
    for section, info in Answers.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            fields = [(f"{section}.{name}", f) for name, f in model.model_fields.items()]
        else:
            fields = [(section, info)]
        for key, field in fields:
            extra = field.json_schema_extra or {}
            assert isinstance(extra, dict), key
            kind, choices = _kind(field.annotation)
            required = field.is_required()
            questions[key] = Question(
                key=key,
                kind=kind,  # type: ignore[arg-type]
                question=str(extra.get("question", key)),
                why=str(extra.get("why", "")),
                choices=choices,
                required=required,
                default=None if required else field.get_default(call_default_factory=True),
                example=extra.get("example"),
            )
    return questions


QUESTIONS: dict[str, Question] = _build_questions()


# -- loading and error messages ----------------------------------------------------------


def _key_of(loc: tuple[Any, ...]) -> tuple[str, str]:
    """(question key, displayed key) for a pydantic error location."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    shown = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc)
    return ".".join(parts), shown.replace(".[", "[")


def _explain(error: dict[str, Any]) -> str:
    key, shown = _key_of(tuple(error["loc"]))
    question = QUESTIONS.get(key)
    kind = error["type"]
    got = error.get("input")
    if kind == "missing" and question is not None:
        allowed = f" (allowed: {question.allowed})" if question else ""
        return f"missing required answer '{shown}'{allowed}"
    if kind == "extra_forbidden":
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        known = sorted(
            k.split(".")[-1]
            for k in QUESTIONS
            if (k.rsplit(".", 1)[0] if "." in k else "") == parent
        )
        if not parent:
            known = sorted({k.split(".")[0] for k in QUESTIONS})
        return f"unknown answer '{shown}'; known keys here: {', '.join(known)}"
    if question is None:
        section = sorted(k.split(".", 1)[1] for k in QUESTIONS if k.startswith(f"{key}."))
        if section and kind == "missing":
            return f"missing section '{shown}' (answers: {', '.join(section)})"
        if section:
            return f"'{shown}' must be a section with the answers {', '.join(section)}"
        return f"'{shown}': {error['msg']}"
    if kind == "list_type":
        return f"'{shown}' must be a list of one or more of: {' | '.join(question.choices)}"
    if kind == "too_short" and question.kind == "multi":
        return f"'{shown}' needs at least one value; allowed: {question.allowed}"
    return f"'{shown}' = {describe_value(got)} is not allowed; allowed: {question.allowed}"


def describe_value(value: Any, limit: int = 60) -> str:
    """A bounded description of a bad value: never the repr of a (hostile) nested structure."""
    if isinstance(value, str):
        text = repr(value[: limit + 1])
        return text if len(value) <= limit else text[:limit] + "...'"
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    kind = {dict: "a mapping", list: "a list"}.get(type(value), type(value).__name__)
    return kind


def validation_message(exc: ValidationError, source: str) -> str:
    """One line naming every invalid key and its allowed values (pydantic's errors, reworded)."""
    problems = [_explain(e) for e in exc.errors()]
    return f"{source}: " + "; ".join(problems)


def parse_answers(data: Any, source: str = "answers") -> Answers:
    """Validate already-parsed YAML data; raise `InputError` with one clear line."""
    if not isinstance(data, dict):
        raise InputError(
            f"{source}: expected a mapping with the sections "
            f"{', '.join(sorted({k.split('.')[0] for k in QUESTIONS}))}, got {type(data).__name__}"
        )
    version = data.get("version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise InputError(
            f"{source}: 'version' = {describe_value(version)} is not supported; "
            f"this mlwarden reads questionnaire version {SCHEMA_VERSION}"
        )
    try:
        return Answers.model_validate(data)
    except ValidationError as exc:
        raise InputError(validation_message(exc, source)) from None


def load_answers(path: str | Path) -> Answers:
    """Read and validate an answers YAML file (``yaml.safe_load`` only)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_ANSWERS_BYTES:
            raise InputError(
                f"answers file '{path}' is larger than {MAX_ANSWERS_BYTES // 1024} KiB; "
                "an answers file is a few dozen lines"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(
            f"answers file '{path}' not found", hint="create one with: mlwarden risk init"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"answers file '{path}' cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise InputError(
            f"answers file '{path}' is nested too deeply to be an answers file"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"answers file '{path}' is not valid YAML{where}") from None
    return parse_answers(data, source=str(path))


# -- writing ---------------------------------------------------------------------------


def _yaml_scalar(value: Any) -> str:
    return (
        yaml.safe_dump(value, default_flow_style=True, width=1000)
        .strip()
        .removesuffix("...")
        .strip()
    )


def answers_to_yaml(
    data: dict[str, Any], *, comments: bool = True, fill: Literal["default", "example"] = "default"
) -> str:
    """Answers as YAML, each key preceded by its question and allowed values.

    A key missing from ``data`` gets its default (``fill="default"``; required keys
    are then left out) or its example answer (``fill="example"``, for the template).
    """
    lines = [
        f"# mlwarden risk questionnaire (schema version {SCHEMA_VERSION})",
        "# Check every answer, then run: mlwarden risk assess <this file>",
    ]
    section = None
    for key, q in QUESTIONS.items():
        parts = key.split(".")
        missing = object()
        value: Any = data
        for part in parts:
            value = value.get(part, missing) if isinstance(value, dict) else missing
        if value is missing:
            if fill == "example":
                value = q.example
            elif q.required:
                continue
            else:
                value = q.default
        if len(parts) == 1:
            lines.append("")
            if comments:
                lines.append(f"# {q.question}")
            lines.append(f"{key}: {_yaml_scalar(value)}")
            continue
        if parts[0] != section:
            section = parts[0]
            lines += ["", f"{section}:"]
        if comments:
            lines.append(f"  # {q.question}{'' if q.required else ' (optional)'}")
            if q.why:
                lines.append(f"  # Why it matters: {q.why}")
            lines.append(f"  # Allowed: {q.allowed}")
        lines.append(f"  {parts[1]}: {_yaml_scalar(value)}")
    return "\n".join(lines) + "\n"


def template_yaml() -> str:
    """A commented answers file filled with example answers (replace them)."""
    return answers_to_yaml({}, fill="example").replace(
        "# Check every answer,", "# Every value below is an EXAMPLE: replace it with your answer,"
    )


def json_schema() -> dict[str, Any]:
    """JSON Schema of the answers file, for editors (e.g. the YAML language server)."""
    schema = Answers.model_json_schema()
    schema["title"] = "mlwarden risk questionnaire answers"
    return schema
