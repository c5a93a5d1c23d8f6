"""Subcommands of ``python -m chatcore`` beyond the core ones in ``cli.py``.

Each module here defines ``register(sub)`` that adds its parser(s) to the
argparse sub-parsers, with ``set_defaults(func=...)``; the function returns an
exit code and raises ``chatcore.cli.UsageError`` for bad input (exit 2).
"""
