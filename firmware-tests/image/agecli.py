"""Debian's `age` command with a passphrase (scrypt recipient), and age's format written
at a chosen work factor (:func:`encrypt_light`).

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


def encrypt_light(data: bytes, out: Path, passphrase: str, log_n: int = 12) -> None:
    """An age v1 file (scrypt recipient) with a chosen, low work factor.

    ``age`` always uses 2^18; the box's rage (pyrage) refuses any work factor above its
    own estimate of one second's work + 4, and under TCG on a loaded host that estimate
    drops below 18: a host-made restore backup then "does not open" on the guest. Real
    boxes make their own backups, so the tests make restore files this way and check
    the format against the real ``age`` CLI (:func:`decrypt`)."""
    import base64
    import hashlib
    import hmac

    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode().rstrip("=")

    def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
        return HKDF(SHA256(), 32, salt, info).derive(ikm)

    file_key, salt, nonce = os.urandom(16), os.urandom(16), os.urandom(16)
    wrap_key = hashlib.scrypt(passphrase.encode(), salt=b"age-encryption.org/v1/scrypt" + salt,
                              n=1 << log_n, r=8, p=1, dklen=32, maxmem=1 << 30)
    body = ChaCha20Poly1305(wrap_key).encrypt(bytes(12), file_key, None)
    header = f"age-encryption.org/v1\n-> scrypt {b64(salt)} {log_n}\n{b64(body)}\n---".encode()
    mac = hmac.new(hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()
    payload_key = ChaCha20Poly1305(hkdf(file_key, nonce, b"payload"))
    chunks = [data[i:i + 65536] for i in range(0, len(data), 65536)] or [b""]
    sealed = b"".join(payload_key.encrypt(i.to_bytes(11, "big") + bytes([i == len(chunks) - 1]), c, None)
                      for i, c in enumerate(chunks))
    out.write_bytes(header + f" {b64(mac)}\n".encode() + nonce + sealed)
