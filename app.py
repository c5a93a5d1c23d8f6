"""Entry point for hosting the Space on Hugging Face Spaces (SDK: gradio, app_file: app.py).

Binds 0.0.0.0:7860 as Spaces expect and, when the Space has persistent storage,
writes the log to /data/chat_logs.jsonl. Everything else comes from the Space's
variables and secrets (CHAT_RESPONDER, OPENAI_*, HF_TOKEN, CHAT_ALLOWED_ORIGINS, ...).
"""
import os
from pathlib import Path

from chatcore.config import Settings
from chatcore.space.app import serve

if __name__ == "__main__":
    default_log = "/data/chat_logs.jsonl" if Path("/data").is_dir() else None
    serve(Settings.from_env(
        host=os.environ.get("CHAT_HOST", "0.0.0.0"),
        port=int(os.environ.get("PORT", "7860")),
        log_path=os.environ.get("CHAT_LOG_PATH") or default_log,
    ))
