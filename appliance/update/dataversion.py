"""Version markers on every on-disk store, so a slot never reads data it does not know.

After an A/B update the new system migrates its data forward; if it is then rolled back
(or an older card is put in), the old code must refuse that data rather than misread or
"repair" it. Each store directory carries ``.data-version``::

    {"format": "hearth-data-version", "store": "tower", "version": 2}

* no marker, directory missing or empty: a new store, marked with this code's version;
* no marker, directory with data: version 1 (the format before markers existed);
* marker older than this code: each forward step ``n -> n+1`` runs once, the marker is
  rewritten (atomically, fsynced) after each step, so a power cut mid-migration repeats
  only the step it interrupted (steps must be idempotent);
* marker newer than this code: :class:`DataTooNew`; nothing is touched.

Concurrent starts (every service checks ``keys``) are serialised by an exclusive
``flock`` on the store's directory.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config
from ..durability import write_atomic

__all__ = ["FORMAT", "MARKER", "STORES", "DataTooNew", "DataVersionError", "StoreSpec",
           "check_service", "ensure", "read_marker", "store_paths"]

MARKER = ".data-version"
FORMAT = "hearth-data-version"
#: the version of a store that has data but no marker (written before markers existed)
UNMARKED = 1

Migration = Callable[[Path], None]


class DataVersionError(Exception):
    """A store's marker is unreadable, or a migration failed (the store is left as the
    last completed step left it)."""


class DataTooNew(DataVersionError):
    """The store was written by a newer Hearth: this code refuses to open it."""

    def __init__(self, store: str, found: int, known: int) -> None:
        super().__init__(f"Data from a newer Hearth: {store} data is version {found}, this "
                         f"Hearth knows up to {known}. Nothing was changed; update again.")
        self.store, self.found, self.known = store, found, known


@dataclass(frozen=True)
class StoreSpec:
    """One store's current version and the forward steps to it (``n`` -> ``n + 1``)."""

    name: str
    version: int
    migrations: Mapping[int, Migration] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [n for n in range(UNMARKED, self.version) if n not in self.migrations]
        if self.version < UNMARKED or missing:
            raise ValueError(f"{self.name}: version {self.version} needs steps from {missing}")


#: Every store this code knows. Bump ``version`` and add the step when a format changes.
STORES: Mapping[str, StoreSpec] = {
    "keys": StoreSpec("keys", 1),  # hsm_secret and what is derived from it
    "pairing": StoreSpec("pairing", 1),  # paired clients, TLS identity (indexer's dir)
    "index": StoreSpec("index", 1),  # the indexer's LevelDB
    "tower": StoreSpec("tower", 1),
    "backup": StoreSpec("backup", 1),
}

#: the stores each service opens (checked before its main runs)
_SERVICE_STORES: Mapping[str, tuple[str, ...]] = {
    "indexer": ("keys", "pairing", "index"),
    "tower": ("keys", "tower"),
    "backup": ("keys", "backup"),
    "setup": ("keys", "pairing"),
    "usb": ("keys",),
}


def store_paths(cfg: Config) -> dict[str, Path]:
    """Where each store lives on this box."""
    return {"keys": cfg.hearth.data_dir, "pairing": cfg.service_dir("indexer"),
            "index": cfg.service_dir("indexer") / "index", "tower": cfg.service_dir("tower"),
            "backup": cfg.service_dir("backup")}


def read_marker(path: Path) -> int | None:
    """The version in ``path``'s marker; None when there is none."""
    try:
        data = json.loads((path / MARKER).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DataVersionError(f"{path / MARKER}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        data = {}
    version = data.get("version")
    if data.get("format") != FORMAT or not isinstance(version, int) or isinstance(version, bool) \
            or version < UNMARKED:
        raise DataVersionError(f"{path / MARKER}: not a data-version marker")
    return version


def _write_marker(path: Path, store: str, version: int) -> None:
    # Readable by all (a version is no secret) and owned like its directory: root's USB
    # agent may be the first to mark the data directory that every service reads.
    marker = path / MARKER
    write_atomic(marker, json.dumps({"format": FORMAT, "store": store,
                                     "version": version}).encode() + b"\n", 0o644)
    if os.geteuid() == 0:
        owner = path.stat()
        os.chown(marker, owner.st_uid, owner.st_gid)


def ensure(spec: StoreSpec, path: Path) -> int:
    """Bring the store at ``path`` to ``spec.version`` (see the module doc); the version
    it had. Raises :class:`DataTooNew` (nothing touched) or :class:`DataVersionError`."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        found = read_marker(path)
        if found is None:
            has_data = any(p.name != MARKER for p in path.iterdir())
            found = UNMARKED if has_data else spec.version
            if not has_data:
                _write_marker(path, spec.name, found)
                return found
        if found > spec.version:
            raise DataTooNew(spec.name, found, spec.version)
        for step in range(found, spec.version):
            try:
                spec.migrations[step](path)
            except Exception as exc:
                raise DataVersionError(f"{spec.name}: migration {step} -> {step + 1} failed: "
                                       f"{exc}") from exc
            _write_marker(path, spec.name, step + 1)
        if found == spec.version and read_marker(path) is None:
            _write_marker(path, spec.name, found)  # an unmarked store of the current version
        return found
    finally:
        os.close(fd)  # releases the lock


def check_service(service: str, cfg: Config,
                  stores: Mapping[str, StoreSpec] = STORES) -> dict[str, int]:
    """Ensure every store ``service`` opens; store -> the version it had."""
    paths = store_paths(cfg)
    return {name: ensure(stores[name], paths[name]) for name in _SERVICE_STORES.get(service, ())}
