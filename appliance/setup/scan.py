"""Read the QR codes in a phone's photo (the "scan the wallet's key" button of the page).

The decoder is zbar (Debian's ``libzbar0``) through ``pyzbar``, a small pure-Python ctypes
binding. Chosen over ``zxing-cpp`` (which decodes a little more and has aarch64 wheels)
because the C code that parses untrusted pixels then comes from Debian and gets its
security fixes with ``apt upgrade`` on the box, instead of being frozen in a wheel we pin;
it is also the decoder every QR test here already trusts (zbarimg), and there is no
compiled wheel to build or pin for the Pi.

The photo is untrusted input: only JPEG, PNG and WebP are opened (Pillow's other parsers
never see it), its pixel count is checked from the header before anything is decoded,
and JPEGs are decoded at a reduced scale by libjpeg itself (``draft``), so a 12 MP photo
never becomes a 36 MB bitmap. The page decodes in a child process
(:func:`read_qr_codes_isolated`: ``python -I -m appliance.setup.scan``) whose address
space and CPU time are limited before it reads the photo, so a decoder bug or a
pathological photo costs that child, not the web server.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import resource
import sys

from PIL import Image, UnidentifiedImageError

__all__ = ["MAX_PHOTO_BYTES", "MAX_PIXELS", "DecoderFailed", "PhotoError", "read_qr_codes",
           "read_qr_codes_isolated"]

log = logging.getLogger("setup")

MAX_PHOTO_BYTES = 8 * 1024 * 1024
# 50 MP: above any phone's main camera in normal mode; refused before decoding.
MAX_PIXELS = 50_000_000
_FORMATS = ["JPEG", "PNG", "WEBP"]
# Long side of the first, cheap try; a QR that fills a fair part of a phone photo reads
# here. Small QRs in a big photo get a second try at the larger size.
_SIDES = (1280, 2560)
# The child's limits: a 2560 px retry needs ~40 MiB above the interpreter; CPU seconds
# well above a Pi's worst case (~1.5 s), wall time a little more.
_CHILD_MEMORY = 512 * 2**20
_CHILD_CPU_S = 20
_CHILD_TIMEOUT_S = 30.0


class PhotoError(ValueError):
    """The upload is not a photo the box can read (the message is for the person)."""


class DecoderFailed(PhotoError):
    """The decoding child crashed or ran out of time (counted on the status bus)."""


def read_qr_codes(data: bytes) -> list[str]:
    """The distinct texts of the QR codes in the photo, in the order zbar found them
    (empty when there is none). Raises :class:`PhotoError` for what is not a photo."""
    if len(data) > MAX_PHOTO_BYTES:
        raise PhotoError(f"The photo is larger than {MAX_PHOTO_BYTES // 2**20} MB.")
    with _open(data) as image:
        width, height = image.size
    if width * height > MAX_PIXELS or min(width, height) < 21:
        raise PhotoError("That picture's size is not one of a phone photo.")
    # Imported here: pyzbar loads libzbar when imported, and only the child needs it.
    from pyzbar import pyzbar

    found: list[str] = []
    for side in _SIDES:
        for symbol in pyzbar.decode(_grayscale(data, side),
                                    symbols=[pyzbar.ZBarSymbol.QRCODE]):
            text = symbol.data.decode("utf-8", errors="replace")
            if text not in found:
                found.append(text)
        if found or max(width, height) <= side:
            break
    return found


def _open(data: bytes) -> Image.Image:
    """Reads only the header; pixels are decoded on first use."""
    try:
        return Image.open(io.BytesIO(data), formats=_FORMATS)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise PhotoError("That file is not a photo the box can read (JPEG, PNG or "
                         "WebP).") from None


def _grayscale(data: bytes, side: int) -> Image.Image:
    """The photo at most ``side`` pixels on its long side, 8-bit gray (what zbar reads).
    Opened afresh for each size: JPEG's draft() works only before the first decode."""
    with _open(data) as image:
        try:
            if image.format == "JPEG":
                # libjpeg scales by 1/2, 1/4, 1/8 while decoding: far less memory and time.
                image.draft("L", (side, side))
            gray = image.convert("L")
        except (OSError, ValueError, Image.DecompressionBombError):
            raise PhotoError("That photo is damaged and could not be read.") from None
    gray.thumbnail((side, side), Image.Resampling.BILINEAR)
    return gray


async def read_qr_codes_isolated(data: bytes, timeout: float = _CHILD_TIMEOUT_S) -> list[str]:
    """:func:`read_qr_codes` in a fresh, limited child process (see the module's doc)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-m", __name__, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(data), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log.warning("photo decoder killed after %.0f s", timeout)
        raise DecoderFailed("Reading that photo took too long. Try a closer, sharper "
                         "photo of the code.") from None
    try:
        answer = json.loads(out)
    except ValueError:
        answer = None
    if proc.returncode != 0 or not isinstance(answer, dict):
        log.warning("photo decoder failed (exit %s)", proc.returncode)
        raise DecoderFailed("The box could not read that photo. Try another photo.")
    if "error" in answer:
        raise PhotoError(str(answer["error"]))
    return [str(t) for t in answer["texts"]]


def _child() -> None:
    """``python -m appliance.setup.scan``: limits first, then the photo on stdin; the
    texts (or the refusal) as JSON on stdout."""
    resource.setrlimit(resource.RLIMIT_AS, (_CHILD_MEMORY, _CHILD_MEMORY))
    resource.setrlimit(resource.RLIMIT_CPU, (_CHILD_CPU_S, _CHILD_CPU_S))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no photo on disk
    data = sys.stdin.buffer.read(MAX_PHOTO_BYTES + 1)
    try:
        answer: dict[str, object] = {"texts": read_qr_codes(data)}
    except PhotoError as exc:
        answer = {"error": str(exc)}
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    _child()
