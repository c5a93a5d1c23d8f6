"""The website widget: ``/widget.js`` (one script tag) and a demo host page at ``/widget/demo``."""
