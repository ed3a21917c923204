"""Where the status bus lives: one ipc socket per service under ``<run_dir>/status/``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .schema import check_service_name

__all__ = ["MAX_IPC_PATH_BYTES", "ensure_status_dir", "service_from_socket", "status_dir",
           "status_endpoint", "status_socket_path"]

#: sun_path is 108 bytes on Linux, one of them the terminating NUL.
MAX_IPC_PATH_BYTES = 107

_SUFFIX = ".sock"


def status_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / "status"


def status_socket_path(run_dir: str | os.PathLike[str], service: str) -> Path:
    """``<run_dir>/status/<service>.sock``; ValueError if too long for a unix socket."""
    path = status_dir(run_dir) / (check_service_name(service) + _SUFFIX)
    size = len(os.fsencode(path))
    if size > MAX_IPC_PATH_BYTES:
        # libzmq would fail with a bare EINVAL; say what is wrong instead.
        raise ValueError(f"status socket path {path} is {size} bytes, over the "
                         f"{MAX_IPC_PATH_BYTES}-byte unix socket limit: use a shorter run_dir")
    return path


def status_endpoint(run_dir: str | os.PathLike[str], service: str) -> str:
    return f"ipc://{status_socket_path(run_dir, service)}"


def ensure_status_dir(run_dir: str | os.PathLike[str]) -> Path:
    """Create ``<run_dir>/status`` as 0700 (only the appliance's user may connect)."""
    run = Path(run_dir)
    run.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = status_dir(run)
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.stat()
    # mkdir's mode is masked by the umask, and an older directory may be looser: tighten
    # it when it is ours (someone else's directory is their business, and chmod would fail).
    if stat.S_IMODE(info.st_mode) & 0o077 and info.st_uid == os.geteuid():
        path.chmod(0o700)
    return path


def service_from_socket(path: Path) -> str | None:
    """The service a ``<name>.sock`` file belongs to, or None for anything else."""
    if path.suffix != _SUFFIX:
        return None
    try:
        return check_service_name(path.stem)
    except ValueError:
        return None
