#!/usr/bin/env bash
# Chat Operator launcher.
#   ./run.sh [FLAGS]      set up on first use, then run the Space and the dashboard on embedded defaults
#                         (FLAGS go to `python -m chatcore dashboard`: --port 8502 --space-port 7870 --log PATH ...)
#                         and the alerts watcher when CHAT_ALERT_WEBHOOKS is set
#   ./run.sh test [ARGS]  set up, then run the tests (ARGS go to pytest; CHAT_TEST_WORKERS=3 processes)
#   ./run.sh setup        only set up (.venv, Python packages from requirements.lock, test tools)
#   ./run.sh lock         refresh requirements.lock and requirements.txt from pyproject.toml
# Environment: see docs/configuration.md (CHAT_LOG_PATH, CHAT_SPACE_URL, CHAT_RESPONDER, ...).
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

setup_python() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  # The versions the tests passed with, checked by hash; reinstalled only when the lock changed.
  local stamp="$VENV/.requirements.sha"
  local want
  want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "==> installing Python packages from requirements.lock (first run takes a minute or two)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q --require-hashes -r requirements.lock
    # the project itself, for the `chatcore` command (its dependencies are in the lock)
    "$VENV/bin/python" -m pip install -q --no-deps -e .
    echo "$want" > "$stamp"
  fi
}

lock() {
  # Refresh the pins from pyproject.toml: requirements.lock (runtime and test, with hashes)
  # for ./run.sh, and requirements.txt (runtime only) for hosts such as Hugging Face Spaces.
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q "uv>=0.5,<1"
  local compile=("$VENV/bin/python" -m uv pip compile pyproject.toml --quiet --python-version 3.11
                 --python-platform x86_64-unknown-linux-gnu --no-header)
  "${compile[@]}" --extra test --generate-hashes -o requirements.lock
  "${compile[@]}" -o requirements.txt
  echo "==> wrote requirements.lock and requirements.txt"
}

setup_test_tools() {
  # @gradio/client from npm, to call the Space exactly as a website does.
  if [ ! -d tests/js/node_modules/@gradio/client ]; then
    echo "==> installing @gradio/client for the contract tests"
    npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
  fi
  # A real browser for the page and widget tests.
  if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "==> installing Chromium"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "Chromium is missing: run 'sudo apt-get install -y chromium' and try again." >&2
      exit 1
    fi
  fi
}

run_dashboard() {
  if [ -n "${CHAT_ALERT_WEBHOOKS:-}" ]; then
    # The alerts watcher runs beside the dashboard, as its own process (never in a chat turn's way).
    "$VENV/bin/python" -m chatcore alerts &
    local alerts_pid=$!
    # The webhook URLs are secrets: only the watcher gets them.
    env -u CHAT_ALERT_WEBHOOKS "$VENV/bin/python" -m chatcore dashboard "$@" &
    local dash_pid=$!
    # A stop signal to this script goes on to both (bash alone would wait for the launcher first);
    # the launcher then stops its own children.
    trap 'kill -TERM "$dash_pid" "$alerts_pid" 2>/dev/null' TERM INT HUP
    local rc=0
    while kill -0 "$dash_pid" 2>/dev/null; do
      wait "$dash_pid" && rc=0 || rc=$?   # returns early on a trapped signal: wait again
    done
    kill -TERM "$alerts_pid" 2>/dev/null || true
    wait "$alerts_pid" 2>/dev/null || true
    exit "$rc"
  fi
  exec "$VENV/bin/python" -m chatcore dashboard "$@"
}

cmd=${1:-run}
case "$cmd" in
  -*)
    # ./run.sh --port 8502 ...: flags for the launcher
    setup_python
    run_dashboard "$@"
    ;;
  setup)
    setup_python
    setup_test_tools
    ;;
  lock)
    lock
    ;;
  test)
    shift
    setup_python
    setup_test_tools
    # Test files run side by side in CHAT_TEST_WORKERS processes (default 3: most of a test's
    # time is spent waiting on the servers it started); 0 runs them in this process.
    workers=${CHAT_TEST_WORKERS:-3}
    if [ "$workers" = 0 ]; then
      exec "$VENV/bin/python" -m pytest "$@"
    fi
    exec "$VENV/bin/python" -m pytest -n "$workers" --dist loadfile "$@"
    ;;
  run)
    [ $# -gt 0 ] && shift
    setup_python
    run_dashboard "$@"
    ;;
  *)
    echo "usage: ./run.sh [run|test|setup|lock] [ARGS]   (./run.sh --port 8502 --space-port 7870 moves both ports)" >&2
    exit 2
    ;;
esac
