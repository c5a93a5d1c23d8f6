"""Entry point for hosting the Space on Hugging Face Spaces (SDK: gradio, app_file: app.py).

Binds 0.0.0.0:7860 as Spaces expect and, when the Space has persistent storage,
writes the log to /data/chat_logs.jsonl. Everything else comes from the Space's
variables and secrets (CHAT_RESPONDER, OPENAI_*, HF_TOKEN, CHAT_ALLOWED_ORIGINS, ...).
"""
from pathlib import Path

from chatcore.config import Settings
from chatcore.space.app import serve

if __name__ == "__main__":
    settings = Settings.from_env()
    changes = {"host": settings.app_host, "port": settings.app_port}
    if "log_path" not in settings.model_fields_set and Path("/data").is_dir():
        changes["log_path"] = Path("/data/chat_logs.jsonl")  # the Space's persistent storage
    serve(settings.with_(**changes))
