"""``python -m chatcore config-docs [--check]``: the reference of docs/configuration.md, made from
the settings' definition (:mod:`chatcore.config.settings`).

Only the part between the two marker comments is written; the prose around it is kept.
With ``--check`` nothing is written: the exit status says whether the file is current.
"""
from __future__ import annotations

import sys
import types
import typing
from pathlib import Path

from chatcore.config.fields import field_env, is_secret
from chatcore.config.settings import GROUPS, Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
BEGIN = "<!-- BEGIN SETTINGS REFERENCE: made by `python -m chatcore config-docs`; edit chatcore/config/settings.py -->"
END = "<!-- END SETTINGS REFERENCE -->"


def _type(field) -> str:
    extra = field.json_schema_extra or {}
    if extra.get("kind"):
        text = extra["kind"]
    else:
        annotation = field.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:  # X | None
            annotation = args[0]
        origin = typing.get_origin(annotation)
        if origin is typing.Literal:
            text = " or ".join(f"`{v}`" for v in typing.get_args(annotation))
        elif origin in (list, tuple):
            text = "comma-separated list"
        else:
            text = {bool: "on/off", int: "whole number", float: "number", Path: "path"}.get(annotation, "text")
    return f"{text}, secret" if is_secret(field) else text


def _default(field) -> str:
    extra = field.json_schema_extra or {}
    if extra.get("shown"):
        return extra["shown"]
    value = field.default
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == "" or value == [] or value == ():
        return "none"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, Path):
        return f"`./{value}`" if not value.is_absolute() else f"`{value}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference() -> str:
    """The generated part: a heading, an introduction and a table for each group of settings."""
    out: list[str] = []
    for key, (level, title, intro) in GROUPS.items():
        rows = [(name, f) for name, f in Settings.model_fields.items()
                if field_env(f) and (f.json_schema_extra or {}).get("group") == key]
        out += ["#" * level + " " + title, ""]
        if intro:
            out += [intro, ""]
        out += ["| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
        for _name, f in rows:
            cells = (f"`{field_env(f)}`", _type(f), _default(f), f.description or "")
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def render(text: str) -> str:
    """``text`` (the page) with the part between the markers made anew."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the page has no pair of markers:\n{BEGIN}\n{END}")
    return text[: start + len(BEGIN)] + "\n\n" + reference() + "\n" + text[end:]


def run(args) -> int:
    from chatcore.cli.main import UsageError

    path = Path(args.file) if args.file else DOC
    try:
        current = path.read_text(encoding="utf-8")
        made = render(current)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: {exc}") from None
    if args.check:
        if made != current:
            print(f"{path} is not what the settings make: run `python -m chatcore config-docs`", file=sys.stderr)
            return 1
        return 0
    if made != current:
        path.write_text(made, encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("config-docs", help="write the settings reference into docs/configuration.md")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when the file is not current")
    p.add_argument("--file", metavar="PATH", default=None, help="the page (default docs/configuration.md)")
    p.set_defaults(func=run)
