"""Settings for a tool that reads the log, wherever the log is: a local path, or a Space's URL.

:meth:`chatcore.config.Settings.from_env` only reads values. Here a log named by URL
(``--log URL``, ``CHAT_LOG_URL``, …; see :func:`chatcore.config.remote_log_spec`) is mirrored
first, and the settings point at the local copy; the Space itself never calls this.
"""
from __future__ import annotations

from chatcore.config import Settings, remote_log_spec
from chatcore.urls import display_url


def load_settings(**overrides) -> Settings:
    """``Settings.from_env(**overrides)``, with a remote log attached as a local mirror."""
    settings = Settings.from_env(**overrides)
    spec = remote_log_spec(overrides.get("log_path"))
    if not spec:
        return settings
    from chatcore.remote.mirror import attach

    mirror = attach(spec)
    changes = {"log_path": mirror.folder, "log_url": ", ".join(display_url(u) for u in mirror.urls)}
    if "space_url" not in settings.model_fields_set:  # neither CHAT_SPACE_URL nor space_url= was given
        changes["space_url"] = mirror.urls[0]
    return settings.with_(**changes)
