"""The README and docs/ stay true to the tree: the README stays a short front door, every relative
link (and its #anchor) leads somewhere, docs/configuration.md's reference is what the settings'
definition makes, and every CHAT_* name in the code is a setting there."""
from __future__ import annotations

import doctest
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
LOG_FORMAT = ROOT / "docs" / "log-format.md"
README_MAX_LINES = 250

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
#: [text](target) and ![alt](target); the target ends at whitespace or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
SETTING = re.compile(r"\bCHAT_[A-Z0-9_]*[A-Z0-9]\b")


def markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "chatcore" / "space" / "widget" / "README.md"]


def prose(text: str) -> str:
    """The text outside fenced code blocks and code spans (links there are examples)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        name, n = base, 1
        while name in found:  # GitHub numbers repeated headings: name, name-1, name-2
            name, n = f"{base}-{n}", n + 1
        found.add(name)
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Relative links of ``path`` whose file (or #anchor in a Markdown file) does not exist,
    named relative to ``root``."""
    problems = []
    for target in LINK.findall(prose(path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # https:, mailto:, …
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{path.relative_to(root)}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor.lower() not in anchors(dest):
            problems.append(f"{path.relative_to(root)}: {target} (no heading #{anchor} in {dest.name})")
    return problems


def settings_read_by(paths: list[Path]) -> set[str]:
    return {name for p in paths for name in SETTING.findall(p.read_text(encoding="utf-8"))}


# ---------------------------------------------------------------------------------- the tree


def test_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the details to a page in docs/")


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_somewhere(path):
    assert broken_links(path) == []


def test_readme_links_every_docs_page():
    linked = {t.partition("#")[0] for t in LINK.findall(prose(README.read_text(encoding="utf-8")))}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"docs/{p.name}" not in linked]
    assert missing == [], f"docs pages the README does not link: {missing}"


def test_the_configuration_reference_is_what_the_settings_make():
    from chatcore.cli.config_docs import render

    text = CONFIGURATION.read_text(encoding="utf-8")
    assert render(text) == text, "run `python -m chatcore config-docs` (the settings changed)"


def defined_settings() -> set[str]:
    from chatcore.config.fields import field_env
    from chatcore.config.settings import Settings

    return {field_env(f) for f in Settings.model_fields.values() if field_env(f)}


def test_every_setting_named_anywhere_is_defined_once_and_documented():
    code = [*(ROOT / "chatcore").rglob("*.py"), *(ROOT / "pages").glob("*.py"),
            ROOT / "app.py", ROOT / "dashboard.py", ROOT / "run.sh"]
    names = settings_read_by([p for p in code if p.exists()])
    assert {"CHAT_LOG_PATH", "CHAT_TEST_WORKERS"} <= names  # the scan finds code and run.sh
    assert sorted(names - defined_settings()) == [], "define these in chatcore/config/settings.py"
    page = CONFIGURATION.read_text(encoding="utf-8")
    assert sorted(name for name in defined_settings() if f"`{name}`" not in page) == []


# ------------------------------------------------------------- the log recipes print what they show

BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def log_format_blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(LOG_FORMAT.read_text(encoding="utf-8"))


def lines_of(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip("\n").splitlines()]


@pytest.fixture
def sample_log(tmp_path) -> Path:
    """The page's small log, written by the page's own snippet (the project's writer)."""
    [snippet] = [code for lang, code in log_format_blocks() if lang == "python" and "LogWriter(" in code]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env, check=True, timeout=60)
    log = tmp_path / "chat_logs.jsonl"
    assert any('"kind":"staff_message"' in line for line in log.read_text().splitlines())
    return tmp_path


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
def test_the_jq_recipes_print_what_the_page_shows(sample_log):
    examples = [code for lang, code in log_format_blocks() if lang == "bash" and code.startswith("$ jq")]
    assert len(examples) >= 3  # the naive count, turns per conversation, the events
    for code in examples:
        lines = code.splitlines()
        command = [lines[0][2:]]
        rest = lines[1:]
        while rest and not rest[0].startswith(("{", "[")):
            command.append(rest.pop(0))
        out = subprocess.run(["bash", "-c", "\n".join(command)], cwd=sample_log, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert lines_of(out.stdout) == lines_of("\n".join(rest)), command[0]


def test_the_pandas_recipe_prints_what_the_page_shows(sample_log):
    blocks = log_format_blocks()
    [at] = [i for i, (lang, code) in enumerate(blocks) if lang == "python" and "per_conversation" in code]
    recipe, (lang, shown) = blocks[at][1], blocks[at + 1]
    assert lang == "text"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", recipe], cwd=sample_log, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert lines_of(out.stdout) == lines_of(shown)
    assert "order-1              2" in shown  # two turns, not the eight lines the naive count gives


def test_the_interactive_examples_print_what_the_page_shows(sample_log, monkeypatch):
    monkeypatch.chdir(sample_log)
    examples = [code for lang, code in log_format_blocks() if lang == "python" and code.startswith(">>>")]
    assert len(examples) >= 2  # the naive pandas count, the project's reader
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for i, code in enumerate(examples):
        runner.run(parser.get_doctest(code, {}, f"log-format example {i}", str(LOG_FORMAT), 0), out=report.append)
    assert runner.failures == 0, "".join(report)


def test_the_recipes_count_turns_as_the_cli_does(sample_log, monkeypatch):
    """What the page promises: on a log with both shapes, event lines and a broken line, the
    recipes agree with `python -m chatcore conversations`."""
    log = sample_log / "chat_logs.jsonl"
    with log.open("ab") as f:
        f.write(b'{"v":1,"ts":"2026-11-21T1\n')  # cut short
        f.write(b'{"v":1,"ts":"2026-11-21T11:00:00.000Z","conversation_id":"late-4","turn":0,"user_text":"hi",'
                b'"files":[],"response":"hello","latency_ms":5,"source":"api","backend":"echo","model":null,'
                b'"error":null,"session":null}\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "chatcore", "conversations", "--log", str(log), "--format", "json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    cli = {row["conversation_id"]: row["turns"] for row in json.loads(out.stdout)}
    assert cli == {"order-1": 2, "refund-2": 3, "seed-3": 1, "late-4": 1}

    blocks = log_format_blocks()
    [recipe] = [code for lang, code in blocks if lang == "python" and "per_conversation" in code]
    monkeypatch.chdir(sample_log)
    namespace: dict = {}
    exec(compile(recipe, str(LOG_FORMAT), "exec"), namespace)  # noqa: S102 - the page's own example
    assert namespace["per_conversation"]["turns"].to_dict() == cli

    if shutil.which("jq"):
        [jq] = [code for lang, code in blocks if lang == "bash" and "fromjson?" in code and "turns: length" in code]
        command = jq.splitlines()
        command = "\n".join(line for line in [command[0][2:], *command[1:]] if not line.startswith("{"))
        out = subprocess.run(["bash", "-c", command], cwd=sample_log, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        counted = {row["conversation_id"]: row["turns"] for row in map(json.loads, out.stdout.splitlines())}
        assert counted == cli


# ------------------------------------------------------------------------- the checks work


def test_the_checks_catch_what_they_are_for(tmp_path):
    (tmp_path / "there.md").write_text("# A page\n\n## Event lines (schema v2)\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md) [ok](there.md#event-lines-schema-v2) [ok](https://example.org/x)\n"
        "![missing image](gone.png) [missing page](nowhere.md) [bad anchor](there.md#no-such)\n"
        "```\n[inside a code block](ignored.md)\n```\n`[in a code span](ignored.md)`\n",
        encoding="utf-8")
    problems = broken_links(page, root=tmp_path)
    assert problems == ["page.md: gone.png (no such file)", "page.md: nowhere.md (no such file)",
                        "page.md: there.md#no-such (no heading #no-such in there.md)"]
    (tmp_path / "config.py").write_text('os.environ.get("CHAT_NEW_THING")\nPREFIX = "CHAT_DASHBOARD_"\n')
    assert settings_read_by([tmp_path / "config.py"]) == {"CHAT_NEW_THING"}
