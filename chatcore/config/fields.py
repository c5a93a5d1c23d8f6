"""How a setting is declared (:func:`setting`), where its value shows (:func:`reveal`), and how a
value that does not parse is explained (:class:`SettingsError`): the parts of
:mod:`chatcore.config.settings` that are not the list of settings itself."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, SecretStr, ValidationError


def setting(default: Any = None, doc: str = "", *, env: str, group: str, shown: str | None = None,
            kind: str | None = None, keep_empty: bool = False, **constraints: Any) -> Any:
    """A field read from the variable ``env``. ``shown`` is the default as the docs say it (when
    the value alone would not explain it), ``kind`` the type as the docs say it; a blank value
    counts as unset unless ``keep_empty``."""
    extra = {"env": env, "group": group, "shown": shown, "kind": kind, "keep_empty": keep_empty}
    return Field(default, description=doc, json_schema_extra=extra, **constraints)


def field_env(field) -> str | None:
    """The environment variable of a field (None for a value given only by the program)."""
    return (field.json_schema_extra or {}).get("env")


def is_secret(field) -> bool:
    return "SecretStr" in str(field.annotation)


def reveal(value: SecretStr | None) -> str | None:
    """A secret's text where the program needs it (None when unset or blank)."""
    return (value.get_secret_value() or None) if value is not None else None


class SettingsError(SystemExit):
    """A setting that does not parse. A SystemExit: uncaught, it stops the program with this
    message and exit status 1, no traceback."""


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _expected(error: dict, field) -> str:
    """What a field takes, as the end of "VARIABLE must be …"."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    extra = (field.json_schema_extra or {}) if field is not None else {}
    annotation = str(field.annotation) if field is not None else ""
    if "float" in annotation:
        unit = {"seconds": " of seconds", "USD": " of USD"}.get(extra.get("kind"), "")
        number = f"a number{unit}"
    else:
        number = "a whole number"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("int_parsing", "int_from_float", "int_type"):
        return "a whole number"
    if kind in ("float_parsing", "float_type"):
        return number
    if kind == "finite_number":
        return f"{number} (not inf or nan)"
    if kind in ("bool_parsing", "bool_type"):
        return "on or off (1/0, true/false)"
    if kind == "literal_error":
        return f"one of {ctx.get('expected')}"
    if kind == "greater_than":
        return f"{number} above {_number(ctx.get('gt'))}"
    if kind == "greater_than_equal":
        return f"{number} of at least {_number(ctx.get('ge'))}"
    if kind == "less_than":
        return f"{number} below {_number(ctx.get('lt'))}"
    return error["msg"].lower()


def explain(exc: ValidationError, model_fields: Mapping[str, Any], environ: Mapping[str, str],
            given: Mapping[str, Any]) -> str:
    """One line per bad value: the variable (or the field, for a value the program passed), what
    it must be, and the value as given, except a secret's."""
    lines = []
    for error in exc.errors(include_url=False):
        name = str(error["loc"][0]) if error["loc"] else "settings"
        field = model_fields.get(name)
        env = field_env(field) if field is not None else None
        from_env = env is not None and name not in given
        label = env if from_env else name
        raw = environ.get(env, "").strip() if from_env else given.get(name)
        shown = " (not shown: it is a secret)" if field is not None and is_secret(field) else f", got {raw!r}"
        line = f"{label} must be {_expected(error, field)}{shown}"
        if line not in lines:
            lines.append(line)
    return "\n".join(lines)
