"""The photo decoder with the real zbar (pyzbar + libzbar0) on phone-like photos that
segno and Pillow make: turned, blurred, noisy, on a larger canvas; and what is refused."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib

import pytest
from functional.framework.qrphoto import qr_photo
from PIL import Image

from appliance.setup.scan import MAX_PHOTO_BYTES, PhotoError, read_qr_codes, read_qr_codes_isolated

VPUB = ("vpub5Xzfrm6ouSBPEvS1a3ZWBePKFrvz2XEJC82RaNGNvCrcm4t7xL3Tfad4aDNuzs1wPnuSJm7n973r5"
        "xyXXpyVdowWfyor2od9C5kMDfifEZH")
SMALL = (1600, 1200)


def test_a_12_megapixel_phone_photo_reads() -> None:
    photo = qr_photo(VPUB, size=(4000, 3000), fraction=0.35, angle=8)
    assert len(photo) > 500_000
    assert read_qr_codes(photo) == [VPUB]


def test_a_small_code_far_away_reads_on_the_second_try() -> None:
    # 10% of the photo's height: too small at the first (1280 px) size, read at 2560.
    assert read_qr_codes(qr_photo(VPUB, size=(4000, 3000), fraction=0.1, angle=3)) == [VPUB]


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_formats_a_phone_uploads(fmt: str) -> None:
    assert read_qr_codes(qr_photo(VPUB, size=SMALL, fmt=fmt, angle=-12, blur=2.0)) == [VPUB]


def test_several_codes_are_all_returned_once_each() -> None:
    texts = read_qr_codes(qr_photo(VPUB, "bitcoin:bcrt1qexample", VPUB, size=(3000, 1200),
                                   fraction=0.3))
    assert sorted(texts) == sorted([VPUB, "bitcoin:bcrt1qexample"])


def test_a_photo_without_a_code_is_empty() -> None:
    assert read_qr_codes(qr_photo(size=SMALL)) == []


def test_what_is_not_a_photo_is_refused() -> None:
    with pytest.raises(PhotoError, match="not a photo"):
        read_qr_codes(b"GIF89a" + b"\0" * 100)
    with pytest.raises(PhotoError, match="not a photo"):
        read_qr_codes(b"%PDF-1.4 garbage")
    with pytest.raises(PhotoError, match="larger than 8 MB"):
        read_qr_codes(b"\xff" * (MAX_PHOTO_BYTES + 1))
    gif = io.BytesIO()
    Image.new("L", (100, 100)).save(gif, format="GIF")  # a real image, not a format we open
    with pytest.raises(PhotoError, match="not a photo"):
        read_qr_codes(gif.getvalue())


def test_a_truncated_jpeg_is_refused_in_words() -> None:
    photo = qr_photo(VPUB, size=SMALL)
    with pytest.raises(PhotoError, match="damaged"):
        read_qr_codes(photo[: len(photo) // 2])


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims a huge size in a few bytes (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


def test_a_huge_pixel_count_is_refused_before_decoding() -> None:
    with pytest.raises(PhotoError):
        read_qr_codes(_png_header(9000, 9000))  # 81 MP
    with pytest.raises(PhotoError):
        read_qr_codes(_png_header(60000, 60000))  # Pillow's own bomb limit
    with pytest.raises(PhotoError, match="size"):
        read_qr_codes(_png_header(10, 10))


def test_the_page_decodes_in_a_limited_child_process() -> None:
    photo = qr_photo(VPUB, size=SMALL)
    assert asyncio.run(read_qr_codes_isolated(photo)) == [VPUB]
    with pytest.raises(PhotoError, match="not a photo"):  # the child's words come through
        asyncio.run(read_qr_codes_isolated(b"garbage"))
    with pytest.raises(PhotoError, match="took too long"):  # killed, not waited for
        asyncio.run(read_qr_codes_isolated(photo, timeout=0.001))
