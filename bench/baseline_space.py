"""The baseline for bench/space.py: a Gradio ChatInterface as the first Space was written.

Defaults everywhere (so ChatInterface's concurrency_limit of 1), the same word-by-word
echo, and the log written with open-append-close per turn.

    python bench/baseline_space.py PORT LOG_PATH
"""
import json
import os
import sys
import time
from datetime import datetime, timezone

import gradio as gr

PORT, LOG = int(sys.argv[1]), sys.argv[2]
DELAY = float(os.environ.get("CHAT_ECHO_DELAY", "0") or 0)


def chat(message, history, conversation_id, source):
    text = message.get("text", "") if isinstance(message, dict) else str(message)
    reply = ""
    for i, word in enumerate(f"You said: {text}".split(" ")):
        if DELAY:
            time.sleep(DELAY)
        reply += word if i == 0 else " " + word
        yield reply
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps({"timestamp": datetime.now(timezone.utc).isoformat(), "conversation_id": conversation_id,
                            "user_text": text, "response": [reply]}) + "\n")


demo = gr.ChatInterface(chat, multimodal=True, api_name="chat", additional_inputs=[
    gr.Textbox(value="", label="conversation_id", visible=False),
    gr.Textbox(value="api", label="source", visible=False)])
demo.launch(server_name="127.0.0.1", server_port=PORT, quiet=True)
