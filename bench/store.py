"""Benchmark of chatcore.store / chatcore.log.follow against DuckDB, polars and plain pandas.

    python bench/store.py [--turns 1000000] [--shapes v1,seed,seed-no-history,mixed] [--out DIR] [--repeat 3]
                          [--skip-pandas] [--skip-polars] [--skip-import] [--list-only]

Generates (or reuses) realistic logs in DIR (default /tmp/chatcore-bench), one per log
shape: ``v1`` (what the Space writes), ``seed`` (the seed Space's shape: ``timestamp``
without a zone, the reply as a list of lines, the chat ``history`` before the message, which
grows with the conversation), ``seed-no-history`` (the same without the history) and
``mixed`` (each line v1 or seed).

First, per shape, the CLI conversation list (``python -m chatcore conversations --format
json``, a fresh process each time; wall time and the process's peak RSS), cold (no cache)
and warm (cache present), beside references measured in the same run on the same file:
DuckDB ``read_json`` + GROUP BY conversation_id, polars ``read_ndjson`` + group_by (if
installed) and naive ``pandas.read_json(lines=True)`` + groupby, with the goals (cold <= 1.5x
DuckDB, warm <= 0.2x; the seed's shape without history >= 10x faster than pandas cold). For
``seed`` and ``mixed`` also ``python -m chatcore import`` once, and the cold list of the
imported log.

Then (v1 only, unless --list-only), each cold figure in a fresh subprocess:

* cold open + group by conversation_id: LogStore (all columns, and only the conversation
  list's columns) vs pandas.read_json(lines=True)
* warm reopen with the cache
* refresh after appending 1,000 turns
* a one-day query (one file, and a folder of daily shards)
* tail: write -> drain latency of a 10,000-turn burst (no loss, p50/p95/max)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = {
    "cold_s": 1.5,
    "cold_ratio": 10.0,
    "cold_rss_mb": 1024,
    "warm_s": 0.3,
    "refresh_ms": 50.0,
}

WORDS = (
    "the a order refund account password reset invoice shipping delivery tracking number please "
    "thanks hello help cannot login error payment card declined subscription cancel upgrade plan "
    "warranty return label address change email phone support agent wait minutes today tomorrow "
    "café naïve résumé über 日本 ✓ 🙂"
).split()


def _text(rng: random.Random, lo: int, hi: int, median: float) -> str:
    n = int(min(hi, max(lo, rng.lognormvariate(0, 0.8) * median)))
    out, size = [], 0
    while size < n:
        w = rng.choice(WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n]


def generate(path: Path, turns: int, seed: int = 7, start: datetime | None = None, days: int = 30,
             shape: str = "v1") -> None:
    """A log of ``turns`` turns. ``shape``: ``v1`` (what the Space writes), ``seed`` (what the
    seed's Space wrote: ``timestamp`` without a zone, ``response`` as a list of lines, the chat
    ``history`` before the message, ``json.dumps(..., ensure_ascii=False)`` spacing),
    ``seed-no-history`` (the same without ``history``: what the seed's shape costs on its own)
    or ``mixed`` (each line one or the other at random)."""
    import orjson

    rng = random.Random(seed)
    start = start or datetime(2026, 10, 22, tzinfo=timezone.utc)
    n_conv = max(1, turns // 8)
    span = days * 86400
    conv_start = sorted(rng.random() * span for _ in range(n_conv))
    # interleave conversations: each has ~8 turns a few seconds/minutes apart
    events = []
    counts = []
    remaining = turns
    for i, t0 in enumerate(conv_start):
        k = 8 if i < n_conv - 1 else remaining
        k = min(k, remaining)
        remaining -= k
        counts.append(k)
        t = t0
        for j in range(k):
            events.append((t, i, j))
            t += rng.uniform(5, 240)
    events.sort()
    ids = [f"{rng.getrandbits(128):032x}" for _ in range(n_conv)]
    ids = [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in ids]
    tmp = path.with_suffix(".tmp")
    # the seed's Space logs the chat history before each message: every earlier turn of the
    # conversation as a user and an assistant message (the reply's lines joined by newlines)
    history: dict[int, list] = {}
    with open(tmp, "wb") as f:
        buf = []
        for t, i, j in events:
            ts = start + timedelta(seconds=t)
            rec = {
                "v": 1,
                "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
                "conversation_id": ids[i],
                "turn": j,
                "user_text": _text(rng, 20, 300, 35),
                "files": [] if rng.random() > 0.02 else [{"name": "screenshot.png", "size": 12345}],
                "response": _text(rng, 100, 1500, 110),
                "latency_ms": round(rng.uniform(80, 4000), 3),
                "source": "widget" if rng.random() < 0.7 else "api",
                "backend": "openai",
                "model": "gpt-4o-mini",
                "error": None if rng.random() > 0.01 else "timeout",
                "session": f"s{i % 5000}",
            }
            lines = _lines(rec["response"])
            past = history.setdefault(i, []) if shape != "v1" else None
            if shape in ("seed", "seed-no-history") or (shape == "mixed" and rng.random() < 0.5):
                # as the seed's log_turn: datetime.utcnow().isoformat() (no zone), the Gradio
                # history so far, json.dumps(record, ensure_ascii=False)
                old = {"timestamp": ts.replace(tzinfo=None).isoformat(), "conversation_id": rec["conversation_id"],
                       "user_text": rec["user_text"], "response": lines, "history": list(past)}
                if shape == "seed-no-history":
                    del old["history"]
                buf.append(json.dumps(old, ensure_ascii=False).encode() + b"\n")
            else:
                buf.append(orjson.dumps(rec) + b"\n")
            if past is not None:
                if j == counts[i] - 1:
                    del history[i]  # the conversation's last turn
                else:
                    past += [{"role": "user", "content": rec["user_text"]},
                             {"role": "assistant", "content": "\n".join(lines)}]
            if len(buf) >= 10000:
                f.write(b"".join(buf))
                buf = []
        f.write(b"".join(buf))
    os.replace(tmp, path)


def _lines(text: str) -> list[str]:
    """A reply as the seed's Space logged it: a list of lines."""
    words = text.split(" ")
    return [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)] or [""]


def split_daily(src: Path, folder: Path) -> None:
    """The same log as daily shards chat_logs.YYYY-MM-DD.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    handles = {}
    with open(src, "rb") as f:
        for line in f:
            day = line[line.index(b'"ts":"') + 6 :][:10].decode()
            h = handles.get(day)
            if h is None:
                h = handles[day] = open(folder / f"chat_logs.{day}.jsonl", "wb")
            h.write(line)
    for h in handles.values():
        h.close()


# --------------------------------------------------------------------------- subprocess jobs


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def job_store_cold(path: str, cache: str) -> dict:
    import pandas as pd  # noqa: F401  (import time is not part of the figure)

    from chatcore.store import LogStore

    shutil.rmtree(cache, ignore_errors=True)
    c0, t0 = time.process_time(), time.perf_counter()
    store = LogStore(path, cache_dir=cache)
    df = store.frame
    g = df.groupby("conversation_id").agg(turns=("turn", "size"), first=("ts", "min"), last=("ts", "max"))
    t1, c1 = time.perf_counter(), time.process_time()
    store.wait_cache()
    return {"s": t1 - t0, "cpu_s": c1 - c0, "rows": len(df), "groups": len(g), "rss_mb": _rss_mb(), "stats": store.stats}


def job_store_cold_view(path: str, cache: str) -> dict:
    """Cold open of the conversation list: only the columns that view reads, then its summary."""
    import pandas as pd  # noqa: F401

    from chatcore.store.conversation_frames import SUMMARY_INPUT_COLUMNS, summarise_conversations
    from chatcore.store import LogStore

    shutil.rmtree(cache, ignore_errors=True)
    c0, t0 = time.process_time(), time.perf_counter()
    store = LogStore(path, cache_dir=cache, columns=SUMMARY_INPUT_COLUMNS)
    df = store.frame
    g = summarise_conversations(df)
    t1, c1 = time.perf_counter(), time.process_time()
    store.wait_cache()
    return {"s": t1 - t0, "cpu_s": c1 - c0, "rows": len(df), "groups": len(g), "rss_mb": _rss_mb(), "stats": store.stats}


def job_pandas_cold(path: str) -> dict:
    import pandas as pd

    c0, t0 = time.process_time(), time.perf_counter()
    df = pd.read_json(path, lines=True)
    g = df.groupby("conversation_id").agg(turns=("turn", "size"), first=("ts", "min"), last=("ts", "max"))
    t1, c1 = time.perf_counter(), time.process_time()
    return {"s": t1 - t0, "cpu_s": c1 - c0, "rows": len(df), "groups": len(g), "rss_mb": _rss_mb()}


def job_store_warm(path: str, cache: str) -> dict:
    import pandas as pd  # noqa: F401

    from chatcore.store import LogStore

    c0, t0 = time.process_time(), time.perf_counter()
    store = LogStore(path, cache_dir=cache)
    df = store.frame
    t1, c1 = time.perf_counter(), time.process_time()
    g = df.groupby("conversation_id").agg(turns=("turn", "size"), first=("ts", "min"), last=("ts", "max"))
    t2 = time.perf_counter()
    return {"s": t1 - t0, "cpu_s": c1 - c0, "s_with_groupby": t2 - t0, "rows": len(df), "groups": len(g), "rss_mb": _rss_mb()}


def job_refresh(path: str, cache: str) -> dict:
    import orjson

    from chatcore.store import LogStore

    store = LogStore(path, cache_dir=cache)
    n0 = len(store.frame)
    rng = random.Random(1)
    now = datetime.now(timezone.utc)
    lines = []
    for i in range(1000):
        rec = {
            "v": 1,
            "ts": now.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "conversation_id": f"bench-{i // 8}",
            "turn": i % 8,
            "user_text": _text(rng, 20, 300, 35),
            "files": [],
            "response": _text(rng, 100, 1500, 110),
            "latency_ms": 100.0,
            "source": "widget",
            "backend": "echo",
            "model": None,
            "error": None,
            "session": None,
        }
        lines.append(orjson.dumps(rec) + b"\n")
    with open(path, "ab") as f:
        f.write(b"".join(lines))
    t0 = time.perf_counter()
    new = store.refresh()
    t1 = time.perf_counter()
    df = store.frame
    t2 = time.perf_counter()
    return {"ms": (t1 - t0) * 1000, "new": len(new), "frame_ms": (t2 - t1) * 1000, "rows": len(df), "before": n0}


def job_query(path: str, cache: str, day: str) -> dict:
    import pandas as pd

    from chatcore.store import LogStore, load_log

    since = pd.Timestamp(day, tz="UTC")
    until = since + pd.Timedelta(days=1)
    t0 = time.perf_counter()
    df, stats = load_log(path, since=since, until=until, cache_dir=cache)
    t1 = time.perf_counter()
    store = LogStore(path, cache_dir=cache)
    store.refresh()
    t2 = time.perf_counter()
    df2 = store.query(since, until)
    t3 = time.perf_counter()
    assert len(df) == len(df2), (len(df), len(df2))
    return {"load_log_s": t1 - t0, "rows": len(df), "query_loaded_ms": (t3 - t2) * 1000, "rss_mb": _rss_mb()}


def job_tail(folder: str, burst: int) -> dict:
    from chatcore.log.records import make_record
    from chatcore.log.follow import LogTail
    from chatcore.log.writer import LogWriter

    path = Path(folder) / "tail.jsonl"
    path.unlink(missing_ok=True)
    writer = LogWriter(path)
    writer.append(make_record(conversation_id="warm", turn=0, user_text="x", response="y", latency_ms=1, source="b", backend="b"))
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    order: list[str] = []
    with LogTail(path, poll_interval=0.25) as tail:
        time.sleep(0.3)
        import threading

        done = threading.Event()

        def reader():
            while not done.is_set() or len(got) < burst:
                for rec in tail.drain():
                    now = time.perf_counter()
                    cid = rec["conversation_id"]
                    if cid.startswith("b-"):
                        got[cid] = now
                        order.append(cid)
                if len(got) >= burst:
                    return
                time.sleep(0.002)
                if done.is_set() and time.perf_counter() - t_end > 10:
                    return

        t_end = float("inf")
        th = threading.Thread(target=reader)
        th.start()
        for i in range(burst):
            cid = f"b-{i}"
            sent[cid] = time.perf_counter()
            writer.append(make_record(conversation_id=cid, turn=i, user_text="hello " * 10, response="reply " * 50, latency_ms=5, source="bench", backend="bench"))
        t_end = time.perf_counter()
        done.set()
        th.join(30)
    lat = sorted((got[c] - sent[c]) * 1000 for c in got)
    in_order = order == [f"b-{i}" for i in range(len(order))]

    def pct(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

    return {"sent": burst, "received": len(got), "in_order": in_order, "p50_ms": pct(0.5), "p95_ms": pct(0.95), "max_ms": lat[-1] if lat else float("nan")}


def job_duckdb_list(path: str, shape: str) -> dict:
    """Plain DuckDB over the JSONL: the conversation list's query."""
    t0 = time.perf_counter()
    import duckdb

    # (in a mixed log DuckDB may type one key TIMESTAMP and the other VARCHAR: both as text)
    ts = {"v1": "ts", "seed": "timestamp", "seed-no-history": "timestamp"}.get(
        shape, "coalesce(ts::VARCHAR, timestamp::VARCHAR)")
    src = f"read_json('{path}', format='newline_delimited')"
    if shape == "mixed":  # both keys exist somewhere: let DuckDB see the union of the fields
        src = f"read_json('{path}', format='newline_delimited', union_by_name=true)"
    rows = duckdb.sql(f"SELECT conversation_id, count(*) AS turns, min({ts}::TIMESTAMPTZ) AS first_ts, "
                      f"max({ts}::TIMESTAMPTZ) AS last_ts, arg_min(user_text, {ts}::TIMESTAMPTZ) AS first_user_text "
                      f"FROM {src} GROUP BY conversation_id ORDER BY last_ts DESC").fetchall()
    return {"s": time.perf_counter() - t0, "groups": len(rows), "rss_mb": _rss_mb()}


def job_polars_list(path: str, shape: str) -> dict:
    t0 = time.perf_counter()
    import polars as pl

    df = pl.read_ndjson(path, infer_schema_length=None)
    tcol = pl.col("ts") if "ts" in df.columns else pl.col("timestamp")
    if shape == "mixed":
        tcol = pl.coalesce(pl.col("ts"), pl.col("timestamp"))
    df = df.with_columns(tcol.str.to_datetime(time_zone="UTC", strict=False).alias("_t"))
    g = df.group_by("conversation_id").agg(pl.len().alias("turns"), pl.col("_t").min().alias("first_ts"),
                                           pl.col("_t").max().alias("last_ts"),
                                           pl.col("user_text").sort_by("_t").first().alias("first_user_text"))
    g = g.sort("last_ts", descending=True)
    return {"s": time.perf_counter() - t0, "groups": g.height, "rss_mb": _rss_mb()}


def job_pandas_list(path: str, shape: str) -> dict:
    t0 = time.perf_counter()
    import pandas as pd

    df = pd.read_json(path, lines=True)
    t = df["ts"] if "ts" in df else df["timestamp"]
    if "ts" in df and "timestamp" in df:
        t = df["ts"].fillna(df["timestamp"])
    df["_t"] = pd.to_datetime(t, utc=True, format="ISO8601")
    g = df.sort_values("_t").groupby("conversation_id").agg(turns=("_t", "size"), first_ts=("_t", "min"),
                                                             last_ts=("_t", "max"), first_user_text=("user_text", "first"))
    return {"s": time.perf_counter() - t0, "groups": len(g), "rss_mb": _rss_mb()}


def job_append_list(path: str, cache: str) -> dict:
    """The dashboard's case: the list is answered, the Space appends 1,000 turns, the page
    reruns: time to take in the new bytes, and to answer the list again (kept groups merged)."""
    import orjson

    from chatcore.store import LogStore
    from chatcore.store.questions import Filters, Questions

    q = Questions(LogStore(path, cache_dir=cache))
    q.sync()
    before = q.conversations(Filters()).turns
    rng = random.Random(2)
    now = datetime.now(timezone.utc)
    lines = [orjson.dumps({"v": 1, "ts": now.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "conversation_id": f"bench-{i // 8}",
                           "turn": i % 8, "user_text": _text(rng, 20, 300, 35), "files": [],
                           "response": _text(rng, 100, 1500, 110), "latency_ms": 100.0, "source": "widget",
                           "backend": "echo", "model": None, "error": None, "session": None}) + b"\n"
             for i in range(1000)]
    with open(path, "ab") as f:
        f.write(b"".join(lines))
    t0 = time.perf_counter()
    q.sync()
    t1 = time.perf_counter()
    after = q.conversations(Filters()).turns
    t2 = time.perf_counter()
    return {"sync_ms": (t1 - t0) * 1000, "list_ms": (t2 - t1) * 1000, "added": after - before}


def run_cli_list(log: Path, *extra: str) -> dict:
    """``python -m chatcore conversations --format json`` in a fresh process: wall time and peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "chatcore", "conversations", "--log", str(log), "--format", "json",
                             *extra], cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    s = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"the CLI failed on {log}")
    return {"s": s, "rss_mb": usage.ru_maxrss / 1024, "groups": max(0, out.count(b"\n") - 2), "bytes": len(out)}


def _try(job: str, *args) -> dict | None:
    try:
        return _run(job, *args)
    except SystemExit as exc:
        print(f"  ({job} failed: {str(exc).strip().splitlines()[-1][:120]})", file=sys.stderr)
        return None


def list_figures(log: Path, shape: str, repeat: int, skip_pandas: bool, skip_polars: bool = False) -> dict:
    """Cold and warm CLI list of one log, and the references on the same file."""
    cache = log.parent / ".chatcore-cache"
    colds = []
    for _ in range(repeat):
        shutil.rmtree(cache, ignore_errors=True)
        colds.append(run_cli_list(log))
    warms = [run_cli_list(log) for _ in range(repeat)]
    res = {"cold": _median(colds, "s"), "warm": _median(warms, "s")}
    res["cold"]["best_s"] = min(c["s"] for c in colds)
    res["warm"]["best_s"] = min(w["s"] for w in warms)
    # the references as whole processes too (start-up and imports included, like the CLI)
    refs = [r for r in (_try("duckdb_list", log, shape) for _ in range(repeat)) if r]
    res["duckdb"] = _median([dict(r, s=r["proc_s"]) for r in refs] or
                            [{"s": float("nan"), "rss_mb": float("nan"), "groups": 0}], "s")
    for name in ("polars", "pandas"):
        skip = (name == "pandas" and skip_pandas) or (name == "polars" and skip_polars)
        r = None if skip else _try(f"{name}_list", log, shape)
        res[name] = dict(r, s=r["proc_s"]) if r else None
    return res


def run_import(log: Path, out: Path) -> dict:
    """``python -m chatcore import LOG --out OUT`` in a fresh process: wall time and peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "chatcore", "import", str(log), "--out", str(out)], cwd=str(ROOT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"import failed on {log}")
    return {"s": time.perf_counter() - t0, "rss_mb": usage.ru_maxrss / 1024,
            "bytes": sum(p.stat().st_size for p in out.glob("*.jsonl"))}


def import_figures(log: Path, repeat: int) -> dict:
    """Importing a seed-shaped log once, then the cold list of the imported log."""
    out = log.parent.parent / f"{log.parent.name}-imported"
    runs = [run_import(log, out) for _ in range(repeat)]
    res = {"import": _median(runs, "s")}
    colds = []
    for _ in range(repeat):
        shutil.rmtree(out / ".chatcore-cache", ignore_errors=True)
        colds.append(run_cli_list(out))
    res["cold_after"] = _median(colds, "s")
    shutil.rmtree(out, ignore_errors=True)
    return res


#: Goals of the CLI list (same-run ratios): cold and warm against DuckDB, and the seed's shape
#: without its history against naive pandas.
LIST_GOALS = {"cold_x_duckdb": 1.5, "warm_x_duckdb": 0.2, "seed_x_pandas": 10.0}


def print_list_figures(turns: int, shape: str, log: Path, r: dict) -> None:
    ddb = r["duckdb"]["s"]
    print(f"\nconversation list, {turns:,} turns, {shape} shape ({log.stat().st_size / 1e6:,.0f} MB): "
          f"load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"  {'':34s} {'wall s':>8s} {'peak RSS MB':>12s} {'x DuckDB':>9s}")
    for label, fig in (("ours: CLI cold (no cache)", r["cold"]), ("ours: CLI warm (cache)", r["warm"]),
                       ("DuckDB read_json + GROUP BY", r["duckdb"]), ("polars read_ndjson + group_by", r["polars"]),
                       ("pandas read_json(lines) + groupby", r["pandas"])):
        if fig is None:
            print(f"  {label:34s} {'-':>8s}")
            continue
        best = f"  (best {fig['best_s']:.2f} s)" if "best_s" in fig else ""
        print(f"  {label:34s} {fig['s']:8.2f} {fig['rss_mb']:12.0f} {fig['s'] / ddb:9.2f}{best}")
    cold_x, warm_x = r["cold"]["s"] / ddb, r["warm"]["s"] / ddb
    print(f"  goals: cold {cold_x:.2f}x DuckDB <= {LIST_GOALS['cold_x_duckdb']}x {_mark(cold_x <= LIST_GOALS['cold_x_duckdb'])}; "
          f"warm {warm_x:.2f}x <= {LIST_GOALS['warm_x_duckdb']}x {_mark(warm_x <= LIST_GOALS['warm_x_duckdb'])}")
    if r["pandas"]:
        faster = r["pandas"]["s"] / r["cold"]["s"]
        goal = (f"  >= {LIST_GOALS['seed_x_pandas']}x {_mark(faster >= LIST_GOALS['seed_x_pandas'])}"
                if shape == "seed-no-history" else "")
        print(f"  ours cold vs pandas: {faster:.1f}x faster{goal}")
    print(f"  groups: ours {r['cold']['groups']:,}, DuckDB {r['duckdb']['groups']:,}")
    if "import" in r:
        im, after = r["import"], r["cold_after"]
        print(f"  import once (python -m chatcore import): {im['s']:.2f} s, peak RSS {im['rss_mb']:.0f} MB, "
              f"{log.stat().st_size / 1e6:,.0f} MB -> {im['bytes'] / 1e6:,.0f} MB; then the cold list of the "
              f"imported log {after['s']:.2f} s ({after['s'] / ddb:.2f}x DuckDB on the original)")


def _run(job: str, *args) -> dict:
    cmd = [sys.executable, __file__, "--job", job, *map(str, args)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
    if out.returncode != 0:
        raise SystemExit(f"job {job} failed:\n{out.stderr}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["proc_s"] = time.perf_counter() - t0  # the whole process, start-up and imports included
    return res


def _median(runs: list[dict], key: str) -> dict:
    runs = sorted(runs, key=lambda r: r[key])
    return dict(runs[len(runs) // 2])


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=1_000_000)
    ap.add_argument("--out", default="/tmp/chatcore-bench")
    ap.add_argument("--shapes", default="v1,seed,mixed",
                    help="log shapes for the conversation list (v1, seed, seed-no-history, mixed)")
    ap.add_argument("--list-only", action="store_true", help="only the conversation list figures")
    ap.add_argument("--skip-polars", action="store_true", help="skip polars (it needs the whole log in memory)")
    ap.add_argument("--skip-pandas", action="store_true", help="skip the slow pandas baseline")
    ap.add_argument("--skip-import", action="store_true", help="skip importing the seed-shaped and mixed logs")
    ap.add_argument("--repeat", type=int, default=3, help="runs of the cold and warm measures (median judged)")
    ap.add_argument("--job", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job:
        name, *rest = args.job
        fn = globals()[f"job_{name}"]
        conv = [int(a) if a.isdigit() else a for a in rest]
        print(json.dumps(fn(*conv), default=str))
        return

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for shape in [s for s in args.shapes.split(",") if s]:
        folder = out / f"list-{shape}-{args.turns}"  # its own folder: its own cache beside it
        folder.mkdir(exist_ok=True)
        shaped = folder / "chat_logs.jsonl"
        if not shaped.exists():
            t = time.perf_counter()
            print(f"generating {args.turns:,} turns ({shape}) -> {shaped} ...", file=sys.stderr)
            generate(shaped, args.turns, shape=shape)
            print(f"  done in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        figures = list_figures(shaped, shape, args.repeat, args.skip_pandas, args.skip_polars)
        if shape in ("seed", "mixed") and not args.skip_import:
            figures.update(import_figures(shaped, args.repeat))
        print_list_figures(args.turns, shape, shaped, figures)
        if shape == "v1":  # appending to a copy (the log stays reusable)
            copy = out / f"append-{args.turns}" / "chat_logs.jsonl"
            copy.parent.mkdir(exist_ok=True)
            shutil.copyfile(shaped, copy)
            _run("append_list", copy, copy.parent / ".chatcore-cache")  # a first run builds the cache
            ap_ = _run("append_list", copy, copy.parent / ".chatcore-cache")
            print(f"  append 1,000 turns: in the store (SQL engine's view) {ap_['sync_ms']:.1f} ms  <= 50 ms "
                  f"{_mark(ap_['sync_ms'] <= 50)}; the all-time list again {ap_['list_ms']:.0f} ms "
                  f"(+{ap_['added']:,} turns)")
            shutil.rmtree(copy.parent, ignore_errors=True)
    if args.list_only:
        return
    log = out / f"chat_logs.{args.turns}.jsonl"
    if not log.exists():
        print(f"generating {args.turns:,} turns -> {log} ...", file=sys.stderr)
        generate(log, args.turns)
    size_mb = log.stat().st_size / 1e6
    print(f"log: {log} ({args.turns:,} turns, {size_mb:.0f} MB)")
    work = Path(tempfile.mkdtemp(prefix="chatcore-bench-", dir=out))
    try:
        cache = work / "cache"
        res = {}
        # the machine may be shared: cold and warm are run --repeat times, each in a
        # fresh process; the median is judged and the best is shown too
        colds = [_run("store_cold", log, cache) for _ in range(args.repeat)]
        res["store_cold"] = _median(colds, "s")
        res["store_cold"]["best_s"] = min(c["s"] for c in colds)
        views = [_run("store_cold_view", log, work / "view-cache") for _ in range(args.repeat)]
        res["store_cold_view"] = _median(views, "s")
        res["store_cold_view"]["best_s"] = min(v["s"] for v in views)
        if not args.skip_pandas:
            res["pandas_cold"] = _run("pandas_cold", log)
        warms = [_run("store_warm", log, cache) for _ in range(args.repeat)]
        res["store_warm"] = _median(warms, "s")
        res["store_warm"]["best_s"] = min(w["s"] for w in warms)
        # refresh on a copy (appending must not grow the reusable log)
        copy = work / "copy" / "chat_logs.jsonl"
        copy.parent.mkdir()
        shutil.copyfile(log, copy)
        _run("store_cold", copy, copy.parent / ".chatcore-cache")
        res["refresh"] = _run("refresh", copy, copy.parent / ".chatcore-cache")
        daily = work / "daily"
        split_daily(log, daily)
        # one file: the cache of the cold run is there; daily shards: nothing cached yet
        res["query_file"] = _run("query", log, cache, "2026-11-05")
        res["query_daily"] = _run("query", daily, work / "daily-cache", "2026-11-05")
        res["tail"] = _run("tail", work, 10000)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    sc, wm, rf = res["store_cold"], res["store_warm"], res["refresh"]
    print()
    print(f"load average during the run: {' / '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(f"{'measure':44s} {'value':>12s}  target")
    print(f"{'store cold open + groupby (median)':44s} {sc['s']:10.2f} s  <= {TARGETS['cold_s']} s  {_mark(sc['s'] <= TARGETS['cold_s'])}  (best {sc['best_s']:.2f} s, cpu {sc['cpu_s']:.2f} s)")
    print(f"{'store cold peak RSS':44s} {sc['rss_mb']:9.0f} MB  <= {TARGETS['cold_rss_mb']} MB  {_mark(sc['rss_mb'] <= TARGETS['cold_rss_mb'])}")
    sv = res["store_cold_view"]
    print(f"{'  conversation list: its columns + summary':44s} {sv['s']:10.2f} s  <= {TARGETS['cold_s']} s  {_mark(sv['s'] <= TARGETS['cold_s'])}  (best {sv['best_s']:.2f} s, cpu {sv['cpu_s']:.2f} s, peak RSS {sv['rss_mb']:.0f} MB)")
    print(f"{'  rows / conversations':44s} {sc['rows']:>12,} / {sc['groups']:,}")
    if "pandas_cold" in res:
        pd_ = res["pandas_cold"]
        ratio = pd_["s"] / sc["s"]  # same run, median store time
        print(f"{'pandas read_json + groupby':44s} {pd_['s']:10.2f} s  (cpu {pd_['cpu_s']:.2f} s, peak RSS {pd_['rss_mb']:.0f} MB)")
        print(f"{'  speed-up store vs pandas':44s} {ratio:10.1f} x  >= {TARGETS['cold_ratio']} x  {_mark(ratio >= TARGETS['cold_ratio'])}")
        print(f"{'  speed-up conversation list vs pandas':44s} {pd_['s'] / sv['s']:10.1f} x")
        print(f"{'  RSS pandas / store':44s} {pd_['rss_mb'] / sc['rss_mb']:10.1f} x")
    print(f"{'store warm reopen (cache) to frame (median)':44s} {wm['s']:10.3f} s  <= {TARGETS['warm_s']} s  {_mark(wm['s'] <= TARGETS['warm_s'])}  (best {wm['best_s']:.3f} s)")
    print(f"{'  warm reopen + groupby':44s} {wm['s_with_groupby']:10.3f} s  (peak RSS {wm['rss_mb']:.0f} MB)")
    print(f"{'refresh after appending 1,000 turns':44s} {rf['ms']:9.1f} ms  <= {TARGETS['refresh_ms']} ms  {_mark(rf['ms'] <= TARGETS['refresh_ms'] and rf['new'] == 1000)}")
    print(f"{'  then .frame with the new rows':44s} {rf['frame_ms']:9.1f} ms")
    for key, label in (("query_file", "one file, cache"), ("query_daily", "daily shards, no cache")):
        q = res[key]
        print(f"{'one-day load_log, ' + label:44s} {q['load_log_s']:10.3f} s  ({q['rows']:,} rows, peak RSS {q['rss_mb']:.0f} MB)")
        print(f"{'  same query on a loaded store':44s} {q['query_loaded_ms']:9.1f} ms")
    tl = res["tail"]
    ok = tl["received"] == tl["sent"] and tl["in_order"]
    print(f"{'tail burst delivered / in order':44s} {tl['received']:>7,}/{tl['sent']:,} {tl['in_order']}  {_mark(ok)}")
    print(f"{'tail write->drain latency p50/p95/max':44s} {tl['p50_ms']:.1f} / {tl['p95_ms']:.1f} / {tl['max_ms']:.1f} ms")


if __name__ == "__main__":
    main()
