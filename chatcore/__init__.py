"""Chat Operator: the Space, the turn log, and the tools that read it."""
from chatcore.log.records import COLUMNS, SCHEMA_VERSION, BadRecord, normalise, make_record
from chatcore.config import Settings
from chatcore.log.writer import LogWriter

__all__ = ["COLUMNS", "SCHEMA_VERSION", "BadRecord", "normalise", "make_record", "Settings", "LogWriter"]
__version__ = "0.1.0"
