"""Chat Operator: the Space, the turn log, and the tools that read it."""
from chatcore.log.records import COLUMNS, SCHEMA_VERSION, BadRecord, normalise, make_record

__all__ = ["COLUMNS", "SCHEMA_VERSION", "BadRecord", "normalise", "make_record", "Settings", "LogWriter"]
__version__ = "0.1.0"

#: Imported when first asked for: every ``python -m chatcore`` command imports this package, and
#: the settings (pydantic) cost a cold conversation list, which reads none, a good part of its time.
_LAZY = {"Settings": "chatcore.config", "LogWriter": "chatcore.log.writer"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'chatcore' has no attribute {name!r}")
