"""``python -m chatcore``: the command line, one module per command."""
