"""What a Space is deployed with holds the runtime only; the lock pins everything by hash."""
from __future__ import annotations

import re
import tomllib

from conftest import ROOT

TEST_ONLY = {"pytest", "pytest-timeout", "pytest-xdist", "hypothesis", "playwright"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[;\s]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pins(path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_requirements_txt_is_the_runtime_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    test = {_name(r) for r in project["optional-dependencies"]["test"]}
    assert test == TEST_ONLY
    deployed = _pins(ROOT / "requirements.txt")
    assert runtime <= set(deployed), runtime - set(deployed)
    assert not (TEST_ONLY & set(deployed)), TEST_ONLY & set(deployed)
    assert project["scripts"]["chatcore"] == "chatcore.cli.main:main"


def test_the_lock_pins_runtime_and_tests_by_hash_and_agrees_with_requirements_txt():
    lock_text = (ROOT / "requirements.lock").read_text()
    locked = _pins(ROOT / "requirements.lock")
    assert TEST_ONLY <= set(locked)
    for name, version in _pins(ROOT / "requirements.txt").items():
        assert locked.get(name) == version, f"{name}: requirements.txt {version}, lock {locked.get(name)}"
    blocks = re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", lock_text)
    for block in blocks:
        if re.match(r"^[A-Za-z0-9_.\-]+==", block):
            assert "--hash=sha256:" in block, block.splitlines()[0]
