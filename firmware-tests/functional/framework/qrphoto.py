"""Phone-like photos of QR codes for the setup page's scan tests: segno draws the code,
Pillow puts it on a larger noisy canvas, turns it a little, blurs it, and saves a JPEG or
PNG the way a camera would. Deterministic (a seeded RNG), so a failure reproduces."""

from __future__ import annotations

import io
import random

import segno
from PIL import Image, ImageFilter

__all__ = ["qr_photo"]


def qr_photo(*texts: str, size: tuple[int, int] = (4000, 3000), fraction: float = 0.4,
             angle: float = 7.0, blur: float = 1.5, fmt: str = "JPEG", seed: int = 1) -> bytes:
    """A ``size`` photo with one QR per text, side by side, each ``fraction`` of the
    photo's height, turned by ``angle`` degrees, blurred and noisy. No text: no QR."""
    rng = random.Random(seed)
    width, height = size
    # Uneven paper-and-shadow background: gaussian noise around mid gray, scaled up.
    canvas = Image.effect_noise((width // 8, height // 8), 40).resize(size).convert("RGB")
    canvas = Image.blend(canvas, Image.new("RGB", size, (200, 196, 188)), 0.6)
    side = int(height * fraction)
    for n, text in enumerate(texts):
        code = segno.make(text, error="M", micro=False)
        out = io.BytesIO()
        code.save(out, kind="png", scale=10, border=4)
        out.seek(0)
        tile = Image.open(out).convert("L").resize((side, side), Image.Resampling.BILINEAR)
        tile = tile.rotate(angle + rng.uniform(-1, 1), resample=Image.Resampling.BILINEAR,
                           expand=True, fillcolor=255)
        x = int(width * (n + 0.5) / max(1, len(texts)) - tile.width / 2)
        y = int(height / 2 - tile.height / 2 + rng.uniform(-0.05, 0.05) * height)
        canvas.paste(tile.convert("RGB"), (x, y))
    noisy = Image.blend(canvas, Image.effect_noise(size, 30).convert("RGB"), 0.12)
    photo = noisy.filter(ImageFilter.GaussianBlur(blur))
    out = io.BytesIO()
    photo.save(out, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return out.getvalue()
