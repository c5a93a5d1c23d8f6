"""The dashboard on a large log: how long each page takes to be ready, how many rows
reach the browser, and the dashboard process's memory. Two parts, one after the other:
Streamlit's AppTest (no browser, the dashboard in this process) and headless Chromium
(the real server, ``python -m chatcore dashboard``, in its own process).

    python bench/dashboard_scale.py [--turns 1000000] [--shape v1] [--out DIR] [--skip-pandas]
                                    [--skip-apptest] [--skip-browser] [--only-fresh-open] [--repeat 2]
    python bench/dashboard_scale.py --goals --turns 5000000 [--repeat 2] [--viewers 0] [--page-cache both]

``--goals`` measures the goals of the dashboard at scale, each printed with PASS/MISS and plain
DuckDB's list over the same JSONL from the same run: in fresh processes with the store's cache
and the whole log's groups on disk (one set-up process writes them if needed; at 5M turns it
peaks at about 3.7 GB, the measured processes stay far below), the Conversations page's first
open, a date range and a search asked first and asked again, Overview and Live opened and
refreshed, the peak RSS, and the memory each extra viewer adds (``--viewers``, in one process).
Each is measured with the OS page cache warm (a dashboard restarted on a running machine: the log,
the store's files and the libraries read recently) and cold (as after a reboot: those files
dropped from the page cache), one table each (``--page-cache``); DuckDB's reference runs in the
same state.
Write -> visible on Live while the same log is open: ``bench/live_browser.py --beside DIR``.

The log is generated (or reused) under DIR (default /tmp/chatcore-bench). One process
plays the dashboard server: a first session opens the Conversations page on a cold
store (nothing parsed, no cache); a second session then opens every page and changes
the filters ("All time", a search, a source, a sort, page 2, a pasted conversation id).
Each figure is the time of one script run, the way a viewer waits for it.

The browser part starts ``python -m chatcore dashboard --no-space`` (with a login) on a
free loopback port against the same log. A first browser session logs in and opens every
page (Overview, Chat, Live, Conversations, "All time", Evaluate) to warm the server; a
second session (a new browser context: nothing cached) then does the same. For each page
it prints the time from the click until the page's main content is drawn and the run has
finished, the table rows (``st.dataframe``) and chart rows the browser received over the
websocket until then, and at the end the dashboard process's peak RSS (VmHWM).

After the AppTest part (or alone, with ``--only-fresh-open``): the Conversations page's first
open in fresh processes whose store cache and saved whole-log groups are on disk (what a
restarted dashboard finds), each timed as a whole process against plain DuckDB's list (goal:
at most 1.0x), then "All time" in another fresh process.

Beside them, measured in the same run on the same file, what answering the same
"All time" list from the raw JSONL costs: DuckDB ``read_json`` + GROUP BY, polars and
naive pandas (each a fresh process; see bench/store.py).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
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
    ap.add_argument("--shape", default="v1", choices=["v1", "seed", "seed-no-history", "mixed"])
    ap.add_argument("--out", default="/tmp/chatcore-bench")
    ap.add_argument("--skip-pandas", action="store_true")
    ap.add_argument("--skip-polars", action="store_true", help="(needs the whole log in memory)")
    ap.add_argument("--keep-cache", action="store_true", help="do not start from a cold store")
    ap.add_argument("--skip-apptest", action="store_true", help="only the browser part")
    ap.add_argument("--skip-browser", action="store_true", help="only the AppTest part")
    ap.add_argument("--only-fresh-open", action="store_true",
                    help="only the Conversations page's first open in fresh processes (the cache on disk)")
    ap.add_argument("--repeat", type=int, default=2, help="fresh processes for the first-open figure")
    ap.add_argument("--goals", action="store_true",
                    help="only the goals of the dashboard at scale (fresh processes, the cache on disk; "
                         "the path for --turns 5000000: no process parses the log except the set-up one)")
    ap.add_argument("--page-cache", choices=["warm", "cold", "both"], default="both",
                    help="--goals: the state of the OS page cache each measured process finds: warm (a dashboard "
                         "restarted on a running machine), cold (as after a reboot), or both, one table each")
    ap.add_argument("--viewers", type=int, default=5,
                    help="viewers for the memory-per-viewer figure (--goals; 0: not measured)")
    ap.add_argument("--job", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job:
        import json

        name, *rest = args.job
        print(json.dumps(globals()[f"job_{name}"](*rest)))
        return

    from bench.store import _try, generate

    folder = Path(args.out) / f"dash-{args.shape}-{args.turns}"
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "chat_logs.jsonl"
    if not log.exists():
        print(f"generating {args.turns:,} turns ({args.shape}) -> {log} ...", file=sys.stderr)
        generate(log, args.turns, shape=args.shape)
    if not args.keep_cache and not args.goals:  # the goals are about a cache on disk
        import shutil

        shutil.rmtree(folder / ".chatcore-cache", ignore_errors=True)

    # the references first, while this process is small (a child inherits its peak RSS figure)
    refs = []
    for name in (() if args.skip_apptest or args.only_fresh_open or args.goals else ("duckdb", "polars", "pandas")):
        if (name == "pandas" and args.skip_pandas) or (name == "polars" and args.skip_polars):
            continue
        r = _try(f"{name}_list", log, args.shape)
        if r:
            refs.append((name, r))

    if args.goals:
        goals_part(args, log)
        return
    if args.only_fresh_open:
        fresh_open_part(args, log, [r for r in (_try("duckdb_list", log, args.shape) for _ in range(args.repeat)) if r])
        return
    if not args.skip_apptest:
        apptest_part(args, log, refs)
        fresh_open_part(args, log, [r for name, r in refs if name == "duckdb"])
    if not args.skip_browser:
        browser_part(args, log)


def job_fresh_open(log: str, all_time: str = "no") -> dict:
    """In this fresh process: the dashboard's Conversations page opened once (AppTest), the
    store's cache already on disk. Times from the start of the process's own work (imports
    included) to the page drawn; with ``all_time`` "yes", then "All time" is chosen (timed on
    its own)."""
    t0 = time.perf_counter()
    os.environ["CHAT_LOG_PATH"] = log
    os.environ["CHAT_SPACE_URL"] = "http://127.0.0.1:9"  # nothing answers: health is quick
    os.environ["CHAT_TIMEZONE"] = "UTC"
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    original_init = PagesManager.__init__

    def init(self, *a, **k):  # as tests/conftest.apptest_knows_the_entry_navigates
        original_init(self, *a, **k)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init
    imported = time.perf_counter() - t0
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=600)
    at.switch_page("pages/conversations.py").run()
    if at.exception:
        raise SystemExit(f"the Conversations page failed: {at.exception}")
    rows = len(at.dataframe[0].value) if at.dataframe else 0
    opened = time.perf_counter() - t0
    if all_time != "yes":
        return {"s": opened, "imports_s": imported, "rows": rows, "rss_mb": _rss_mb()}
    t1 = time.perf_counter()
    at.selectbox(key="conv_preset").select("All time").run()
    if at.exception:
        raise SystemExit(f'"All time" failed: {at.exception}')
    return {"s": opened, "imports_s": imported, "rows": rows, "all_time_s": time.perf_counter() - t1,
            "rss_mb": _rss_mb()}


def job_fresh_open_setup(log: str) -> dict:
    """What a dashboard leaves on disk: the store's segments and the whole log's groups."""
    from chatcore.store import LogStore
    from chatcore.store.questions import Filters, Questions

    q = Questions(LogStore(log))
    q.sync()
    q.conversations(Filters())
    q.store.wait_cache()
    return {"turns": q.conversations(Filters()).turns}


def fresh_open_part(args, log: Path, duckdb_refs: list) -> None:
    """The Conversations page's first open in a fresh dashboard process, the cache on disk (the
    first run below writes it if needed), against plain DuckDB's list from the JSONL (a fresh
    process too, measured in the same run)."""
    _run_here("fresh_open_setup", log)  # the store's cache and the saved groups, as a dashboard leaves them
    runs = [_run_here("fresh_open", log) for _ in range(args.repeat)]  # the first open only: whole processes
    then = _run_here("fresh_open", log, "yes")
    print(f"\nConversations page, first open in a fresh process with the cache on disk, {args.turns:,} turns "
          f"({args.shape}); load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    ddb = sorted(r["proc_s"] for r in duckdb_refs)
    ref = ddb[len(ddb) // 2] if ddb else float("nan")
    for i, r in enumerate(runs, 1):
        ratio = r["proc_s"] / ref  # whole processes on both sides
        print(f"  run {i}: {r['proc_s']:6.2f} s, the whole process (of which imports {r['imports_s']:.2f} s and the "
              f"page {r['s'] - r['imports_s']:.2f} s; {r['rows']} rows shown) = {ratio:.2f}x DuckDB's list ({ref:.2f} s, "
              f"its whole process) <= 1.0x {'PASS' if ratio <= 1.0 else 'MISS'}; peak RSS {r['rss_mb']:,.0f} MB")
    print(f"  then \"All time\" in another fresh process, after its first open: {then['all_time_s']:.2f} s "
          f"({then['all_time_s'] / ref:.2f}x DuckDB's list); peak RSS {then['rss_mb']:,.0f} MB")


def _apptest():
    """Streamlit's AppTest class, the dashboard configured for the bench (in this process)."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    original_init = PagesManager.__init__

    def init(self, *a, **k):  # as tests/conftest.apptest_knows_the_entry_navigates
        original_init(self, *a, **k)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init
    return AppTest


#: The custom range the goals ask for: a week inside the bench log (its turns span 2026-10-22 to 11-21).
GOAL_RANGE = ("2026-11-08", "2026-11-14")
GOAL_SEARCH = "refund"


def job_goals(log: str) -> dict:
    """In this fresh process, the cache on disk: the Conversations page's first open, a date range
    and a search each asked first (one session), then asked again (another session, as a second
    viewer would), Overview and Live opened and refreshed. Each figure is one script run; the first
    open is counted from the start of this process's work, imports included."""
    from datetime import date

    t0 = time.perf_counter()
    os.environ["CHAT_LOG_PATH"] = log
    os.environ["CHAT_SPACE_URL"] = "http://127.0.0.1:9"  # nothing answers: health is quick
    os.environ["CHAT_TIMEZONE"] = "UTC"
    AppTest = _apptest()
    entry = str(ROOT / "dashboard.py")
    out: dict = {"imports_s": time.perf_counter() - t0}
    days = tuple(date.fromisoformat(d) for d in GOAL_RANGE)

    def timed(key, step, at):
        t, c = time.perf_counter(), time.process_time()
        at = step(at)
        out[key] = time.perf_counter() - t
        out[key + "_cpu"] = time.process_time() - c
        if at.exception:
            raise SystemExit(f"{key}: {at.exception}")
        out[key + "_rows"] = len(at.dataframe[0].value) if at.dataframe else 0
        out[key + "_rss_mb"] = _current_rss_mb()
        return at

    # each step is one action of the viewer (one script run): "Custom" (its default week, before
    # the log's end, lists nothing), then the days; "All time", then the search
    custom = lambda at: at.selectbox(key="conv_preset").select("Custom").run()  # noqa: E731
    pick_days = lambda at: at.date_input(key="conv_days").set_value(days).run()  # noqa: E731
    all_time = lambda at: at.selectbox(key="conv_preset").select("All time").run()  # noqa: E731
    search = lambda at: at.text_input(key="conv_search").input(GOAL_SEARCH).run()  # noqa: E731

    a = timed("first_open", lambda at: at.switch_page("pages/conversations.py").run(),
              AppTest.from_file(entry, default_timeout=600))
    out["first_open"] += out["imports_s"]
    a = timed("custom_first", custom, a)
    a = timed("range_first", pick_days, a)
    a = timed("all_time_first", all_time, a)
    a = timed("search_first", search, a)
    b = timed("open_again", lambda at: at.switch_page("pages/conversations.py").run(),
              AppTest.from_file(entry, default_timeout=600))
    b = timed("custom_again", custom, b)
    b = timed("range_again", pick_days, b)
    b = timed("all_time_again", all_time, b)
    b = timed("search_again", search, b)
    c = timed("overview_open", lambda at: at.run(), AppTest.from_file(entry, default_timeout=600))
    c = timed("overview_refresh", lambda at: at.run(), c)
    c = timed("live_open", lambda at: at.switch_page("pages/live.py").run(), c)
    c = timed("live_refresh", lambda at: at.run(), c)
    out["rss_mb"] = _rss_mb()
    return out


def job_viewers(log: str, viewers: str) -> dict:
    """Memory per extra viewer: ``viewers`` sessions in this process, each opening Overview,
    Conversations and "All time" (what each viewer keeps), RSS after each."""
    os.environ["CHAT_LOG_PATH"] = log
    os.environ["CHAT_SPACE_URL"] = "http://127.0.0.1:9"
    os.environ["CHAT_TIMEZONE"] = "UTC"
    AppTest = _apptest()
    entry = str(ROOT / "dashboard.py")
    kept, rss = [], []
    for _ in range(int(viewers)):
        at = AppTest.from_file(entry, default_timeout=600)
        at.run()
        at.switch_page("pages/conversations.py").run()
        at.selectbox(key="conv_preset").select("All time").run()
        if at.exception:
            raise SystemExit(f"a viewer failed: {at.exception}")
        kept.append(at)  # the session stays open, as a viewer's tab does
        rss.append(_current_rss_mb())
    return {"rss_after_each_mb": rss, "peak_mb": _rss_mb()}


#: Goals of issue 26 at scale (seconds, MB).
GOALS = {"asked_first_s": 2.0, "asked_again_s": 0.5, "refresh_s": 0.3, "peak_mb": 2048, "peak_1m_mb": 1536,
         "per_viewer_mb": 50}


def _library_files() -> list[Path]:
    """The files a dashboard process reads to start: the installed packages and this project."""
    import sysconfig

    roots = {Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"]), ROOT / "chatcore",
             ROOT / "pages"}
    return [f for root in roots for f in root.rglob("*") if f.is_file()] + [ROOT / "dashboard.py"]


def set_page_cache(state: str, log: Path) -> None:
    """Put the OS page cache in the state the next measured process should find. "warm": what a
    dashboard restarted on a running machine finds, the log, the store's files and the libraries
    read recently. "cold": as after a reboot, those files dropped from the page cache with
    ``posix_fadvise(DONTNEED)`` (no privileges needed; pages that another running process maps,
    such as a library it has loaded, stay)."""
    import subprocess

    files = [log, *(log.parent / ".chatcore-cache").glob("*")]
    if state == "cold":
        for f in files + _library_files():
            try:
                fd = os.open(f, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        return
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.read(8 << 20):
                pass
    subprocess.run([sys.executable, "-c", "import streamlit.testing.v1, pandas, duckdb, pyarrow.compute, "
                    "chatcore.dashboard.views, chatcore.store.questions"], cwd=str(ROOT), check=True)


def goals_part(args, log: Path) -> None:
    """The goals of the dashboard at scale, each with its reference from this run: plain DuckDB's
    list over the same JSONL (a fresh process, the page cache in the same state) and, for
    memory, the size of the log. One table per page-cache state asked for."""
    _run_here("fresh_open_setup", log)  # the store's cache and the saved groups, as a dashboard leaves them
    states = ("warm", "cold") if args.page_cache == "both" else (args.page_cache,)
    for state in states:
        refs, runs = [], []
        for _ in range(args.repeat):
            set_page_cache(state, log)
            refs.append(_try_ref(log, args.shape))
        for _ in range(args.repeat):
            set_page_cache(state, log)
            runs.append(_run_here("goals", log))
        goals_table(args, log, state, sorted(r["proc_s"] for r in refs if r), runs)
    if args.viewers > 1:
        set_page_cache("warm", log)
        viewers = _run_here("viewers", log, args.viewers)
        rss = viewers["rss_after_each_mb"]
        per = (rss[-1] - rss[0]) / max(1, len(rss) - 1)
        print(f"  {len(rss)} viewers in one process (each: Overview, Conversations, \"All time\"), RSS after each: "
              f"{', '.join(f'{x:,.0f}' for x in rss)} MB; per extra viewer {per:,.1f} MB "
              f"<= {GOALS['per_viewer_mb']} MB {'PASS' if per <= GOALS['per_viewer_mb'] else 'MISS'}")
    print(f"  write -> visible on Live while this log is open: python bench/live_browser.py --beside {log.parent}")


def goals_table(args, log: Path, state: str, ddb: list[float], runs: list[dict]) -> None:
    ref = ddb[len(ddb) // 2] if ddb else float("nan")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nthe dashboard at scale, {args.turns:,} turns ({args.shape}, {log.stat().st_size / 1e6:,.0f} MB), "
          f"fresh processes with the cache on disk, page cache {state}"
          f"{' (as after a reboot)' if state == 'cold' else ' (a dashboard restarted on a running machine)'}; "
          f"load average {load} on {os.cpu_count()} CPUs")
    print(f"  reference from this run: plain DuckDB read_json + GROUP BY over the JSONL, a fresh process: "
          f"{ref:.2f} s (runs: {', '.join(f'{x:.2f}' for x in ddb)})")
    rows = (("Conversations, first open in a fresh process (imports included)", "first_open", "asked_first_s"),
            ('"Custom" chosen (its default week lists nothing)', "custom_first", None),
            (f"a date range ({GOAL_RANGE[0]} to {GOAL_RANGE[1]}), asked first", "range_first", "asked_first_s"),
            ('"All time" chosen (the saved whole-log groups)', "all_time_first", None),
            (f'a search "{GOAL_SEARCH}" (all time), asked first', "search_first", "asked_first_s"),
            ("Conversations, opened by a second viewer", "open_again", "asked_again_s"),
            ('"Custom" chosen again', "custom_again", None),
            ("the same date range, asked again", "range_again", "asked_again_s"),
            ('"All time" chosen again', "all_time_again", None),
            ("the same search, asked again", "search_again", "asked_again_s"),
            ("Overview, opened", "overview_open", None),
            ("Overview, refreshed", "overview_refresh", "refresh_s"),
            ("Live, opened", "live_open", None),
            ("Live, refreshed", "live_refresh", "refresh_s"))
    print("  wall s: each run's time (the worst is judged); cpu s: the process's CPU time in that step (all its "
          "threads), what the step costs without the other work on the machine")
    print(f"  {'step (one script run each; in this order)':62s} {'wall s':>14s} {'cpu s':>12s}  goal          "
          f"x DuckDB  rows")
    # at 1M turns the goals are ratios to DuckDB's list (first open <= 1.0x, "All time" in a second
    # session <= 0.5x) and a smaller peak
    ratios = {"first_open": 1.0, "all_time_again": 0.5} if args.turns <= 1_000_000 else {}
    peak_goal = GOALS["peak_1m_mb"] if args.turns <= 1_000_000 else GOALS["peak_mb"]
    for label, key, goal in rows:
        values = [r[key] for r in runs]
        worst = max(values)
        verdict = f"<= {GOALS[goal]:.1f} s {'PASS' if worst <= GOALS[goal] else 'MISS'}" if goal else ""
        if key in ratios:
            verdict += f"{'; ' if verdict else ''}<= {ratios[key]:.1f}x {'PASS' if worst / ref <= ratios[key] else 'MISS'}"
        cpu = " / ".join(f"{r[key + '_cpu']:.2f}" for r in runs)
        print(f"  {label:62s} {' / '.join(f'{v:.2f}' for v in values):>14s} {cpu:>12s}  {verdict:13s} "
              f"{worst / ref:5.2f}  {runs[-1][key + '_rows']}")
    peak = max(r["rss_mb"] for r in runs)
    peaks = " / ".join(f"{r['rss_mb']:,.0f}" for r in runs)
    print(f"  peak RSS of the process (all the steps above): {peaks} MB "
          f"<= {peak_goal} MB {'PASS' if peak <= peak_goal else 'MISS'} "
          f"(the log is {log.stat().st_size / 2**20:,.0f} MB; its segments "
          f"{sum(f.stat().st_size for f in (log.parent / '.chatcore-cache').glob('*')) / 2**20:,.0f} MB)")


def _try_ref(log: Path, shape: str) -> dict | None:
    from bench.store import _try

    return _try("duckdb_list", log, shape)


def _run_here(job: str, *args) -> dict:
    """A job of this script in a fresh process (wall time of the whole process as proc_s)."""
    import json
    import subprocess

    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--job", job, *map(str, args)], capture_output=True, text=True,
                         cwd=str(ROOT))
    if out.returncode != 0:
        raise SystemExit(f"job {job} failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["proc_s"] = time.perf_counter() - t0
    return res


def apptest_part(args, log: Path, refs: list) -> None:
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

# ------------------------------------------------------------------ headless Chromium

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
BENCH_PASSWORD = "bench-dashboard-password"


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _streamlit_pid(pid: int, timeout: float = 60) -> int:
    """The ``streamlit run`` process the dashboard command started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        todo = [pid]
        while todo:
            p = todo.pop()
            try:
                cmd = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"streamlit" in cmd and b"run" in cmd:
                return p
            todo += _children(p)
        time.sleep(0.2)
    raise SystemExit("the dashboard command started no streamlit process")


def _vm(pid: int, key: str) -> float:
    """``VmHWM`` (peak RSS) or ``VmRSS`` of ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Received:
    """Rows of tables and charts in what the server sent to one browser page (websocket frames)."""

    def __init__(self):
        self.label = ""
        self.tables: dict[str, int] = {}
        self.table_rows: dict[str, int] = {}
        self.chart_rows: dict[str, int] = {}
        self.cached_refs: dict[str, int] = {}
        self.finished = 0  # whole script runs finished (not fragment runs, not runs cut for a rerun)

    @staticmethod
    def _rows(data: bytes) -> int:
        import pyarrow as pa

        if not data:
            return 0
        try:
            return pa.ipc.open_stream(pa.py_buffer(data)).read_all().num_rows
        except Exception:
            return 0

    def frame(self, payload) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        if isinstance(payload, str):
            return
        msg = ForwardMsg()
        try:
            msg.ParseFromString(payload)
        except Exception:
            return
        kind = msg.WhichOneof("type")
        if kind == "script_finished" and msg.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY:
            self.finished += 1
        if kind == "ref_hash":  # an element the browser already has (same content): no rows sent again
            self.cached_refs[self.label] = self.cached_refs.get(self.label, 0) + 1
        if kind != "delta" or msg.delta.WhichOneof("type") != "new_element":
            return
        el = msg.delta.new_element
        which = el.WhichOneof("type")
        label = self.label
        if which == "dataframe":
            df = el.dataframe
            rows = self._rows(df.arrow_data.data) + self._rows(df.lazy_data.initial_chunk.data)
            self.tables[label] = self.tables.get(label, 0) + 1
            self.table_rows[label] = self.table_rows.get(label, 0) + rows
        elif which == "vega_lite_chart":
            ch = el.vega_lite_chart
            rows = self._rows(ch.data.data) + sum(self._rows(d.data.data) for d in ch.datasets)
            self.chart_rows[label] = self.chart_rows.get(label, 0) + rows


def _wait_run(page, timeout: float = 120_000) -> None:
    """Until Streamlit has finished the current run."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"] "
        "[data-testid=\"stStatusWidgetRunningIcon\"]')", timeout=timeout)


def _wait_chart(page, timeout: float = 120_000) -> None:
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].some(e => {
               const g = e.querySelector('canvas, svg');
               if (!g) return false;
               const r = g.getBoundingClientRect();
               return r.width > 0 && r.height > 0; })""", timeout=timeout)


def _browser_session(browser, url: str, name: str) -> list[tuple]:
    """One viewer: log in, then every page in turn. Returns (page, seconds, tables, table rows, chart
    rows, cached elements) per page."""
    ctx = browser.new_context(viewport={"width": 1440, "height": 1000}, timezone_id="UTC")
    page = ctx.new_page()
    got = Received()
    page.on("websocket", lambda ws: ws.on("framereceived", got.frame))
    out = []

    def step(label: str, act, ready) -> None:
        got.label = label
        runs = got.finished
        t0 = time.perf_counter()
        act()
        while got.finished == runs:  # the server says the run is over (events arrive while waiting)
            page.wait_for_timeout(10)
            if time.perf_counter() - t0 > 600:
                raise SystemExit(f"{name}, {label}: no finished run in 600 s")
        ready()  # and its main content is drawn
        s = time.perf_counter() - t0
        if page.locator('[data-testid="stException"]').count():
            raise SystemExit(f"{name}, {label}: the page shows an exception")
        out.append((label, s, got.tables.get(label, 0), got.table_rows.get(label, 0), got.chart_rows.get(label, 0),
                    got.cached_refs.get(label, 0)))
        got.label = label + " (after)"  # later refreshes of the page are not its first view

    def nav(title: str):
        return lambda: page.locator('[data-testid="stSidebarNav"] a', has_text=title).click()

    page.goto(url + "/")
    page.get_by_label("Password", exact=True).wait_for(timeout=120_000)
    _wait_run(page)
    page.get_by_label("Password", exact=True).fill(BENCH_PASSWORD)

    def overview_ready():
        page.get_by_text("Lines read").first.wait_for(timeout=300_000)
        page.locator('[data-testid="stMetric"]', has_text="Conversations today").first.wait_for(timeout=300_000)
        _wait_chart(page, 300_000)

    step("Overview (log in)", lambda: page.get_by_role("button", name="Log in").click(), overview_ready)
    step("Chat", nav("Chat"), lambda: page.get_by_placeholder("Type a test prompt…").wait_for(timeout=120_000))
    step("Live", nav("Live"), lambda: page.locator('[data-testid="stDataFrame"] [role="gridcell"]').first.wait_for(
        state="attached", timeout=120_000))

    def conversations_ready():
        page.get_by_text("Matching conversations").first.wait_for(timeout=300_000)
        page.locator('[data-testid="stDataFrame"] [role="gridcell"]').first.wait_for(state="attached",
                                                                                    timeout=300_000)

    step("Conversations (last 7 days)", nav("Conversations"), conversations_ready)
    metric = page.locator('[data-testid="stMetric"]', has_text="Conversations").first
    before = metric.inner_text()

    def all_time():
        page.get_by_label("Date range").click()
        page.get_by_role("option", name="All time").click()

    def all_time_ready():
        page.wait_for_function("([el, t]) => el.innerText !== t", arg=[metric.element_handle(), before],
                               timeout=300_000)
        conversations_ready()

    step('Conversations "All time"', all_time, all_time_ready)
    step("Evaluate", nav("Evaluate"), lambda: page.get_by_role("heading", name="Evaluate").first.wait_for(
        timeout=120_000))
    ctx.close()
    return out


def browser_part(args, log: Path) -> None:
    import signal
    import subprocess

    from playwright.sync_api import sync_playwright

    from chatcore.dashboard.auth import hash_password
    from conftest import free_port, wait_http

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env.update({"CHAT_DASHBOARD_PASSWORD_HASH": hash_password(BENCH_PASSWORD), "CHAT_TIMEZONE": "UTC",
                "PYTHONUNBUFFERED": "1"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatcore", "dashboard", "--no-space", "--host", "127.0.0.1", "--port", str(port),
         "--log", str(log), "--space-url", "http://127.0.0.1:9"],  # nothing answers there: health is quick
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/_stcore/health", timeout=120, proc=proc)
        pid = _streamlit_pid(proc.pid)
        started = _vm(pid, "VmRSS")
        peaks = {"RssAnon": 0.0, "RssFile": 0.0}
        sampling = threading.Event()

        def sample():  # the private and file-backed parts of the peak (VmHWM gives only the sum)
            while not sampling.wait(0.05):
                try:
                    for key in peaks:
                        peaks[key] = max(peaks[key], _vm(pid, key))
                except OSError:
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                first = _browser_session(browser, url, "1st session")
                after_first = _vm(pid, "VmHWM")
                second = _browser_session(browser, url, "2nd session")
            finally:
                browser.close()
        peak, now = _vm(pid, "VmHWM"), _vm(pid, "VmRSS")
        sampling.set()
        sampler.join()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the command stops its streamlit child
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    print(f"\ndashboard in headless Chromium (python -m chatcore dashboard --no-space, login), {args.turns:,} turns "
          f"({args.shape}, {log.stat().st_size / 1e6:,.0f} MB); load average "
          f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print("  time: click -> the run finished and the main content is drawn; rows: received over the websocket;")
    print("  cached: elements the browser already had (sent as a reference, no rows)")
    print(f"  {'page':40s} {'s':>7s}        {'tables':>6s} {'table rows':>10s} {'chart rows':>10s} {'cached':>6s}")
    for name, rows, mark in (("1st session (warms the server)", first, False),
                             ("2nd session (new browser context)", second, True)):
        print(f"  {name}")
        for label, s, tables, trows, crows, refs in rows:
            verdict = ("PASS" if s <= TARGET_S else "MISS") if mark else ""
            print(f"    {label:38s} {s:7.2f}  {verdict:4s}  {tables:6d} {trows:10,d} {crows:10,d} {refs:6d}")
    print(f"  dashboard process (streamlit, pid {pid}): RSS {started:,.0f} MB at start, peak {after_first:,.0f} MB "
          f"after the 1st session, peak {peak:,.0f} MB at the end (now {now:,.0f} MB)  "
          f"<= {TARGET_RSS_MB} MB {'PASS' if peak <= TARGET_RSS_MB else 'MISS'}")
    print(f"  sampled every 50 ms: private memory (RssAnon) peaked at {peaks['RssAnon']:,.0f} MB, mapped files "
          f"(RssFile: libraries, the store's memory-mapped segments, shared with the page cache) at "
          f"{peaks['RssFile']:,.0f} MB")
    print(f"  target: every page <= {TARGET_S} s for the 2nd session")


if __name__ == "__main__":
    main()
