"""The dashboard on a large log, under Streamlit's AppTest (no browser): how long each
page takes to be ready, how many rows the table carries, and the process's memory.

    python bench/dashboard_scale.py [--turns 1000000] [--shape v1] [--out DIR] [--skip-pandas]

The log is generated (or reused) under DIR (default /tmp/chatcore-bench). One process
plays the dashboard server: a first session opens the Conversations page on a cold
store (nothing parsed, no cache); a second session then opens every page and changes
the filters ("All time", a search, a source, a sort, page 2, a pasted conversation id).
Each figure is the time of one script run, the way a viewer waits for it.

Beside them, measured in the same run on the same file, what answering the same
"All time" list from the raw JSONL costs: DuckDB ``read_json`` + GROUP BY, polars and
naive pandas (each a fresh process; see bench/store.py).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TARGET_S = 2.0
TARGET_RSS_MB = 1536


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20  # MB as ru_maxrss/1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=1_000_000)
    ap.add_argument("--shape", default="v1", choices=["v1", "seed", "mixed"])
    ap.add_argument("--out", default="/tmp/chatcore-bench")
    ap.add_argument("--skip-pandas", action="store_true")
    ap.add_argument("--skip-polars", action="store_true", help="(needs the whole log in memory)")
    ap.add_argument("--keep-cache", action="store_true", help="do not start from a cold store")
    args = ap.parse_args()

    from bench.store import _try, generate

    folder = Path(args.out) / f"dash-{args.shape}-{args.turns}"
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "chat_logs.jsonl"
    if not log.exists():
        print(f"generating {args.turns:,} turns ({args.shape}) -> {log} ...", file=sys.stderr)
        generate(log, args.turns, shape=args.shape)
    if not args.keep_cache:
        import shutil

        shutil.rmtree(folder / ".chatcore-cache", ignore_errors=True)

    # the references first, while this process is small (a child inherits its peak RSS figure)
    refs = []
    for name in ("duckdb", "polars", "pandas"):
        if (name == "pandas" and args.skip_pandas) or (name == "polars" and args.skip_polars):
            continue
        r = _try(f"{name}_list", log, args.shape)
        if r:
            refs.append((name, r))

    os.environ["CHAT_LOG_PATH"] = str(log)
    os.environ["CHAT_SPACE_URL"] = "http://127.0.0.1:9"  # nothing answers: health is quick
    os.environ["CHAT_TIMEZONE"] = "UTC"
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    original_init = PagesManager.__init__

    def init(self, *a, **k):  # as tests/conftest.apptest_knows_the_entry_navigates
        original_init(self, *a, **k)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init
    entry = str(ROOT / "dashboard.py")
    figures: list[tuple[str, float, str]] = []

    def timed(label: str, step, at):
        t0 = time.perf_counter()
        at = step(at)
        s = time.perf_counter() - t0
        if at.exception:
            raise SystemExit(f"{label}: {at.exception}")
        rows = len(at.dataframe[0].value) if at.dataframe else 0
        note = (f"{rows} rows in the table; " if at.dataframe else "") + f"RSS now {_current_rss_mb():,.0f} MB"
        figures.append((label, s, note))
        return at

    def open_conversations(at):
        at.run()
        at.switch_page("pages/conversations.py").run()
        return at

    base = _current_rss_mb()
    first = timed("1st session: Overview, then Conversations (cold store)", open_conversations,
                  AppTest.from_file(entry, default_timeout=600))
    total = first.metric[0].value if first.metric else "?"
    at = AppTest.from_file(entry, default_timeout=600)
    at = timed("2nd session: Overview (first page)", lambda a: a.run(), at)
    at = timed("2nd session: Conversations (last 7 days)",
               lambda a: a.switch_page("pages/conversations.py").run(), at)
    at = timed('2nd session: "All time"', lambda a: a.selectbox(key="conv_preset").select("All time").run(), at)
    all_time = next(m.value for m in at.metric if m.label == "Conversations")
    cid = at.dataframe[0].value["conversation_id"].iloc[0]
    at = timed('2nd session: search "refund" (all time)',
               lambda a: a.text_input(key="conv_search").input("refund").run(), at)
    at = timed("2nd session: search a conversation id prefix",
               lambda a: a.text_input(key="conv_search").input(cid[:8]).run(), at)
    at = timed("2nd session: paste a full id (opens it)",
               lambda a: a.text_input(key="conv_search").input(cid).run(), at)
    at = timed("2nd session: clear the search", lambda a: a.text_input(key="conv_search").input("").run(), at)
    at = timed("2nd session: source = api (a range and source not asked before)",
               lambda a: a.multiselect(key="conv_sources").select("api").run(), at)
    at = timed("2nd session: sort by most turns",
               lambda a: a.selectbox(key="conv_sort").select("Most turns").run(), at)
    at = timed("2nd session: page 2", lambda a: a.number_input(key="conv_page").set_value(2).run(), at)
    at = timed("2nd session: a rerun with nothing changed", lambda a: a.run(), at)
    at = timed("2nd session: Live", lambda a: a.switch_page("pages/live.py").run(), at)
    at2 = timed("3rd session: Overview", lambda a: a.run(), AppTest.from_file(entry, default_timeout=600))
    at2 = timed("3rd session: Conversations", lambda a: a.switch_page("pages/conversations.py").run(), at2)
    at2 = timed('3rd session: "All time" (another viewer asked it before)',
                lambda a: a.selectbox(key="conv_preset").select("All time").run(), at2)

    print(f"\ndashboard under AppTest, {args.turns:,} turns ({args.shape}, {log.stat().st_size / 1e6:,.0f} MB); "
          f"load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(f"  conversations (last 7 days) {total}; all time {all_time}")
    print(f"  {'step':52s} {'s':>7s}  target <= {TARGET_S} s from the 2nd session on")
    for label, s, note in figures:
        mark = "" if label.startswith("1st") else ("PASS" if s <= TARGET_S else "MISS")
        print(f"  {label:52s} {s:7.2f}  {mark:4s}  {note}")
    peak = _rss_mb()
    print(f"  dashboard process peak RSS {peak:,.0f} MB (before the first session {base:,.0f} MB)  "
          f"<= {TARGET_RSS_MB} MB {'PASS' if peak <= TARGET_RSS_MB else 'MISS'}")
    print("\n  the same 'All time' list from the raw JSONL, each a fresh process (run before the dashboard):")
    for name, r in refs:
        print(f"  {name:52s} {r['proc_s']:7.2f}        peak RSS {r['rss_mb']:,.0f} MB, {r['groups']:,} conversations")

if __name__ == "__main__":
    main()
