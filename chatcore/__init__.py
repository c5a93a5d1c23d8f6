"""Chat Operator: the Space, the turn log, and the tools that read it."""
from .records import COLUMNS, SCHEMA_VERSION, BadRecord, normalise, make_record
from .settings import Settings
from .writer import LogWriter

__all__ = ["COLUMNS", "SCHEMA_VERSION", "BadRecord", "normalise", "make_record", "Settings", "LogWriter"]
__version__ = "0.1.0"
