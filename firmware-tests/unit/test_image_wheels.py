"""image/check-wheels: a dependency of the appliance without a pinned aarch64 wheel stops
the image build (it would otherwise be missing on the box only, and be found at first boot)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "image" / "check-wheels"


def wheel(directory: Path, name: str, *requires: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(directory / f"{name}-1.0-py3-none-any.whl", "w") as z:
        meta = [f"Name: {name}", "Version: 1.0", *(f"Requires-Dist: {r}" for r in requires)]
        z.writestr(f"{name}-1.0.dist-info/METADATA", "\n".join(meta) + "\n")


def check(tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), "3.13", str(tmp / "wheels"), str(tmp / "app")],
                          capture_output=True, text=True)


def test_complete_set_passes_and_markers_are_evaluated_for_the_pi(tmp_path: Path) -> None:
    wheel(tmp_path / "app", "hearth_appliance", "aiohttp~=3.9", "plyvel~=1.5",
          "RPi.GPIO~=0.7; platform_machine == 'aarch64'", "pytest; extra == 'test'")
    wheel(tmp_path / "wheels", "aiohttp", "yarl>=1", "async-timeout; python_version < '3.11'")
    wheel(tmp_path / "wheels", "yarl")
    res = check(tmp_path)
    assert res.returncode == 0, res.stderr
    assert "3 wheels" in res.stdout


def test_missing_dependency_is_named(tmp_path: Path) -> None:
    wheel(tmp_path / "app", "hearth_appliance", "aiohttp~=3.9", "pyrage~=1.2")
    wheel(tmp_path / "wheels", "aiohttp", "yarl>=1")
    res = check(tmp_path)
    assert res.returncode == 1
    assert "pyrage (needed by hearth-appliance)" in res.stderr
    assert "yarl (needed by aiohttp)" in res.stderr


def test_the_pinned_list_covers_pyproject() -> None:
    """Cheap guard without downloading: every direct dependency is pinned or from Debian."""
    import re
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {re.sub(r"[-_.]+", "-", line.split("==")[0]).lower()
              for line in (REPO / "image" / "requirements-aarch64.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    names = {re.sub(r"[-_.]+", "-", re.split(r"[~<>=!; \[]", d)[0]).lower() for d in deps}
    assert names - pinned <= {"plyvel", "supervisor"}, names - pinned
    # One supervisor on the box: Debian's (it runs supervisord); the venv sees it.
    assert "supervisor" not in pinned
