"""Debian's `age` command with a passphrase (scrypt recipient).

`age` reads passphrases only from a terminal, by design: the tests give it one (a pty)
and type the phrase when it asks, so the real CLI a user would run is what decrypts.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import termios
import time
from pathlib import Path


class AgeError(Exception):
    pass


def _run_with_tty(argv: list[str], passphrase: str, timeout: float = 60) -> None:
    exe = shutil.which(argv[0])
    if exe is None:
        raise AgeError("age not found: install Debian's age (scripts/depends.d/firmware.txt)")
    pid, fd = pty.fork()
    if pid == 0:  # child: the pty is its controlling terminal, /dev/tty included
        try:
            os.execv(exe, argv)
        finally:
            os._exit(127)
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~termios.ECHO  # the phrase must not come back in the output (or an error)
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal (exited)
                break
            if not chunk:
                break
            out += chunk
            # Each prompt ("Enter passphrase", "Confirm passphrase") gets the phrase once.
            if out.lower().count(b"passphrase") > out.count(b"\x00"):
                os.write(fd, passphrase.encode() + b"\r")
                out += b"\x00"  # marks the prompt as answered
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    if os.waitstatus_to_exitcode(status) != 0:
        text = out.replace(b"\x00", b"").decode(errors="replace").replace(passphrase, "<phrase>")
        raise AgeError(f"{' '.join(argv[:2])} failed: {text.strip()[-300:]}")


def decrypt(path: Path, out: Path, passphrase: str) -> bytes:
    _run_with_tty(["age", "--decrypt", "-o", str(out), str(path)], passphrase)
    return out.read_bytes()


def encrypt(data: bytes, out: Path, passphrase: str) -> None:
    plain = out.with_name(out.name + ".plain")
    plain.write_bytes(data)
    try:
        _run_with_tty(["age", "--passphrase", "-o", str(out), str(plain)], passphrase)
    finally:
        plain.unlink()
