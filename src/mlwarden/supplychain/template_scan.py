"""Chat templates (Jinja) shipped inside models: the loader renders them, so they are code.

llama-cpp-python rendered a GGUF's ``tokenizer.chat_template`` in a plain (unsandboxed)
``jinja2.Environment`` (CVE-2024-34359, "Llama Drama"): a template that reaches a Python
object's ``__globals__`` runs anything. Every known escape needs an attribute name with
double underscores, so we look for that name, and for each way of building it without
writing it out (escapes, ``attr``, ``%c`` formatting, underscore-only literals that get
concatenated or multiplied) inside the template's ``{{ }}`` and ``{% %}`` blocks.
Text outside the blocks is output, never evaluated.
"""

from __future__ import annotations

import re
from typing import Any

from mlwarden.supplychain.context import ScanContext

_BLOCK = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|N\{[^}]*\}|[0-7]{1,3})")
_LITERAL = re.compile(r"'([^'\\]*(?:\\.[^'\\]*)*)'|\"([^\"\\]*(?:\\.[^\"\\]*)*)\"")
# objects of Jinja's default namespace whose attributes lead to Python globals
_GADGETS = re.compile(
    r"\b(lipsum|cycler|joiner|self|config|request|url_for|get_flashed_messages|"
    r"_TemplateReference|__builtins__|__import__|getattr|globals|subclasses|mro|"
    r"popen|system|eval|exec|compile|importlib)\b"
)
_STATEMENTS = re.compile(r"\{%-?\s*(import|include|extends|from)\b")


def template_risks(text: str) -> list[str]:
    """What in a Jinja template could execute code when a loader renders it (empty: none)."""
    risks: list[str] = []
    if _STATEMENTS.search(text):
        risks.append("loads another template (import/include/extends)")
    for block in _BLOCK.findall(text):
        if "__" in block:
            risks.append("double-underscore attribute (sandbox-escape gadget)")
        code = _LITERAL.sub("''", block)  # names outside string literals
        if re.search(r"\battr\b", code):
            risks.append("the 'attr' filter (attribute access by computed name)")
        if "%c" in block:
            risks.append("'%c' formatting (builds names from character codes)")
        m = _GADGETS.search(code)
        if m:
            risks.append(f"reference to {m.group(1)!r}")
        for esc in _ESCAPE.finditer(block):
            risks.append(f"escape sequence \\{esc.group(1)} in a string literal (obfuscation)")
            break
        for lit in _LITERAL.finditer(block):
            value = lit.group(1) if lit.group(1) is not None else lit.group(2)
            if value and set(value) == {"_"}:
                risks.append("an underscore-only string literal (builds a dunder name)")
                break
    return sorted(set(risks))


def check_template(template: Any, ctx: ScanContext, member: str | None, where: str) -> None:
    """Findings for one template value (a string, or HF's list of ``{name, template}``)."""
    if isinstance(template, list):
        for item in template:
            if isinstance(item, dict):
                check_template(item.get("template"), ctx, member, f"{where}[{item.get('name')}]")
        return
    if not isinstance(template, str):
        return
    risks = template_risks(template)
    if risks:
        ctx.add(
            "MLW-SCAN-081",
            f"{where} uses {', '.join(risks)}; a loader that renders it outside a Jinja "
            "sandbox runs code (CVE-2024-34359)",
            member=member,
            key=where,
        )
    else:
        ctx.add(
            "MLW-SCAN-082",
            f"{where} ({len(template)} characters) has no code-executing construct",
            member=member,
            key=where,
        )
