"""The Space's memory when its log shard is truncated or rewritten in place (not through
forget): it takes the log as it is now, turn numbers and context alike. A real Space."""
from __future__ import annotations

import json

from gradio_client import Client


def chat(client: Client, cid: str, text: str) -> str:
    return client.predict(message={"text": text, "files": []}, conversation_id=cid, source="widget",
                          api_name="/chat")


def rewrite(path, lines: list[dict]) -> None:
    with open(path, "r+b") as f:  # the same file, changed in place
        f.truncate(0)
        f.write(b"".join(json.dumps(r).encode() + b"\n" for r in lines))


def test_a_shard_rewritten_in_place_is_the_truth_for_turns_and_context(space_factory):
    sp = space_factory()
    client = Client(sp.url, verbose=False)
    cid, other = "rw-space-1", "rw-space-2"
    assert chat(client, cid, "one") == "You said: one"
    assert chat(client, cid, "two") == "You said: two (message 2 in this conversation)"
    assert chat(client, other, "alone") == "You said: alone"
    assert chat(client, cid, "three") == "You said: three (message 3 in this conversation)"

    # an operator redacts turn 1 and removes turn 2, in place
    kept = [r for r in sp.records() if not (r["conversation_id"] == cid and r["turn"] == 2)]
    for r in kept:
        if r["conversation_id"] == cid and r["turn"] == 1:
            r["user_text"] = "[redacted]"
    rewrite(sp.log_path, kept)
    # the next turn is 2 again, its context turns 0 and 1 once each
    assert chat(client, cid, "four") == "You said: four (message 3 in this conversation)"
    mine = [r for r in sp.records() if r["conversation_id"] == cid]
    assert [r["turn"] for r in mine] == [0, 1, 2]
    assert chat(client, other, "again") == "You said: again (message 2 in this conversation)"

    # rewritten with every turn kept (one more word in turn 0): nothing counted twice
    lines = sp.records()
    lines[0]["user_text"] += "!"
    rewrite(sp.log_path, lines)
    assert chat(client, cid, "five") == "You said: five (message 4 in this conversation)"
    assert [r["turn"] for r in sp.records() if r["conversation_id"] == cid] == [0, 1, 2, 3]

    # truncated: the conversation starts afresh
    rewrite(sp.log_path, [])
    assert chat(client, cid, "six") == "You said: six"
    assert [r["turn"] for r in sp.records() if r["conversation_id"] == cid] == [0]
