"""Recovery phrase, box id, the age payload and the phrase screens (no stick needed)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyrage
import pytest
from image.agecli import encrypt_light
from mnemonic import Mnemonic

from appliance.config import load_config
from appliance.control.messages import Payload, PhraseWordsReply
from appliance.devices.pages import (
    PANEL_128X64,
    PANEL_128X128,
    RecoveryWordsPage,
    UsbBackupPage,
    UsbBackupState,
    _Surface,
    render,
    words_per_page,
)
from appliance.display.service import choose_page
from appliance.identity import box_id, derive_bytes, recovery_phrase
from appliance.status import Phase, ServiceState, ServiceStatus
from appliance.usb.agent import RESTORE_FILE, restore_failure
from appliance.usb.archive import (
    FORMAT,
    BackupContents,
    BackupError,
    WrongPhraseError,
    build_payload,
    decrypt_backup,
    encrypt_backup,
    metadata,
    parse_payload,
    scrypt_work_factor,
)
from appliance.usb.phrase import PhraseScreens, words_per_screen

SECRET = bytes(range(32))


def test_phrase_is_bip39_of_the_derived_entropy() -> None:
    words = recovery_phrase(SECRET)
    assert len(words) == 12 and all(w == w.lower() for w in words)
    m = Mnemonic("english")
    assert m.check(" ".join(words))
    assert m.to_entropy(" ".join(words)) == derive_bytes(SECRET, "recovery-phrase", 16)
    assert recovery_phrase(SECRET) == words  # derived, the same every time
    assert recovery_phrase(bytes(32)) != words


def test_box_id_is_short_hex_and_differs_from_other_derivations() -> None:
    bid = box_id(SECRET)
    assert len(bid) == 8 and int(bid, 16) >= 0
    assert bid != box_id(bytes(32))
    assert bid not in SECRET.hex() and bid not in derive_bytes(SECRET, "noise-static").hex()


def _contents(export: bytes | None = b"agent-data") -> BackupContents:
    meta = metadata(SECRET, created="2026-01-01T00:00:00Z", version="t", network="regtest",
                    agent_source="live")
    return BackupContents(SECRET, meta, export, b'{"clients": []}')


def test_round_trip_and_standard_age_header() -> None:
    phrase = " ".join(recovery_phrase(SECRET))
    data = encrypt_backup(_contents(), phrase)
    assert data.startswith(b"age-encryption.org/v1\n-> scrypt ")
    assert SECRET not in data and b"agent-data" not in data
    assert scrypt_work_factor(data) is not None and scrypt_work_factor(data) >= 15  # type: ignore[operator]
    back = decrypt_backup(data, phrase)
    assert back.hsm_secret == SECRET and back.agent_export == b"agent-data"
    assert back.metadata["format"] == FORMAT and back.box_id == box_id(SECRET)
    # The plaintext is a plain tar a person can list with `tar t`.
    plain = pyrage.passphrase.decrypt(data, phrase)
    names = tarfile.open(fileobj=io.BytesIO(plain)).getnames()
    assert names == ["hsm_secret", "metadata.json", "backup-agent/export.bin",
                     "pairing/paired-clients.json"]
    with pytest.raises(WrongPhraseError, match="wrong recovery phrase"):
        decrypt_backup(data, phrase.replace(recovery_phrase(SECRET)[0], "zoo", 1))
    with pytest.raises(BackupError, match="not an age file"):
        decrypt_backup(b"hello", phrase)
    # a flipped byte in the body: refused as damaged (not as a wrong phrase), never half-restored
    damaged = bytearray(data)
    damaged[-5] ^= 1
    with pytest.raises(BackupError, match="damaged backup: chunk 0 corrupt or truncated") as err:
        decrypt_backup(bytes(damaged), phrase)
    assert not isinstance(err.value, WrongPhraseError)
    with pytest.raises(BackupError, match="damaged backup: .*truncated"):
        decrypt_backup(data[:-20], phrase)
    # A work factor above the fixed limit is named, with its number, before scrypt runs.
    log_n = str(scrypt_work_factor(data)).encode()
    steep = data.replace(b" " + log_n + b"\n", b" 23\n", 1)
    with pytest.raises(BackupError, match=r"scrypt work factor 2\^23 too high \(limit 2\^22\)"):
        decrypt_backup(steep, phrase)


def test_restore_failure_names_the_newest_backups_reason_and_fits_the_oled(tmp_path: Path) -> None:
    wrong = WrongPhraseError("wrong recovery phrase")
    steep = BackupError("scrypt work factor 2^23 too high (limit 2^22)")
    assert restore_failure([wrong, steep]) == f"restore: wrong recovery phrase in {RESTORE_FILE}"
    assert restore_failure([steep, wrong]) == f"restore: {steep}"
    assert restore_failure([BackupError("damaged backup: x"), wrong]).endswith("damaged backup: x")
    # What the small OLED shows under FAILED: three lines, no ellipsis, for each kind.
    phrase = " ".join(recovery_phrase(SECRET))
    light = tmp_path / "light.age"  # age's format at a cheap work factor: four decryptions
    encrypt_light(build_payload(_contents()), light, phrase, log_n=10)
    data = light.read_bytes()
    log_n = str(scrypt_work_factor(data)).encode()
    truncated = data[:-20]
    corrupt = bytearray(data)
    corrupt[-5] ^= 1
    at = data.index(b"\n--- ") + 6  # a letter of the header MAC, changed to another
    altered = data[:at] + (b"B" if data[at:at + 1] == b"A" else b"A") + data[at + 1:]
    reasons = [restore_failure([wrong])]
    for bad in (data.replace(b" " + log_n + b"\n", b" 23\n", 1), truncated, bytes(corrupt),
                b"hello", altered, data + b"x",
                b"age-encryption.org/v1\n-> X25519 abc\n\n--- " + b"A" * 43 + b"\n" + bytes(32)):
        with pytest.raises(BackupError) as err:
            decrypt_backup(bad, phrase)
        reasons.append(restore_failure([err.value]))
    # ... and every failure of the age project's scrypt test vectors (log2 N 10: cheap).
    for vector in sorted((Path(__file__).parents[2] / "vectors" / "age" / "testkit").iterdir()):
        head, _, body = vector.read_bytes().partition(b"\n\n")
        if b"expect: success" in head or b"compressed" in head:
            continue
        phrase = "password" if b"passphrase: password" in head else "wrong"
        with pytest.raises(BackupError) as err:
            decrypt_backup(body, phrase)
        reasons.append(restore_failure([err.value]))
    for reason in reasons:
        lines = _Surface(PANEL_128X64, 0).wrap(reason, PANEL_128X64.width)
        assert len(lines) <= 3, (reason, lines)  # 64 rows: title, FAILED, 3 text lines


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_payload_is_parsed_strictly() -> None:
    meta = json.dumps({"format": FORMAT, "box_id": box_id(SECRET)}).encode()
    assert parse_payload(_tar({"hsm_secret": SECRET, "metadata.json": meta})).hsm_secret == SECRET
    for members, message in (
            ({"hsm_secret": SECRET[:31], "metadata.json": meta}, "no valid hsm_secret"),
            ({"hsm_secret": SECRET, "metadata.json": meta, "../etc/passwd": b"x"}, "unexpected entry"),
            ({"hsm_secret": bytes(32), "metadata.json": meta}, "does not match"),
            ({"hsm_secret": SECRET, "metadata.json": b"{"}, "not JSON")):
        with pytest.raises(BackupError, match=message):
            parse_payload(_tar(members))
    with pytest.raises(BackupError, match="not a Hearth payload"):
        parse_payload(b"garbage" * 100)


def test_phrase_screens_and_acknowledgement() -> None:
    screens = PhraseScreens(12, 4)
    assert screens.screens == 3 and screens.span() == (0, 4)
    assert not screens.press() and screens.span() == (4, 8)
    assert not screens.press() and screens.span() == (8, 12)
    assert screens.press()  # the press on the last screen acknowledges
    tall = PhraseScreens(12, 8)
    assert not tall.press() and tall.span() == (8, 12) and tall.press()
    cfg = load_config(None, overrides={"display": {"driver": "ssd1327"}})
    assert words_per_screen(cfg) == 8 and words_per_screen(load_config(None)) == 4


@pytest.mark.parametrize("panel", [PANEL_128X64, PANEL_128X128])
def test_every_phrase_word_renders_whole(panel: object) -> None:
    # The longest BIP39 words are 8 letters: every one must fit a line with its number.
    longest = sorted(Mnemonic("english").wordlist, key=len)[-12:]
    screens = PhraseScreens(len(longest), words_per_page(panel))  # type: ignore[arg-type]
    while True:
        first, end = screens.span()
        page = RecoveryWordsPage(tuple(longest[first:end]), first + 1, len(longest))
        assert render(page, panel).getbbox() is not None  # type: ignore[arg-type]
        if screens.press():
            break


def _usb_state(counters: dict[str, int | float], detail: str = "", error: str | None = None) -> ServiceState:
    return ServiceState(ServiceStatus("usb", Phase.READY, detail=detail, counters=counters,
                                      last_error=error), 0.5, False)


def test_display_shows_phrase_before_pairing_and_usb_results() -> None:
    words = recovery_phrase(SECRET)
    phrase = PhraseWordsReply(words=words[:4], first=1, total=12, last=False)
    page, _, _ = choose_page({"usb": _usb_state({"backup_state": 0, "phrase_first": 0})},
                             Payload("HEARTH:X"), 0.0, phrase=phrase)
    assert isinstance(page, RecoveryWordsPage) and page.words == tuple(words[:4])
    page, _, _ = choose_page({"usb": _usb_state({"backup_state": 3}, error="stick is full")},
                             Payload("HEARTH:X"), 0.0)
    assert isinstance(page, UsbBackupPage) and page.state is UsbBackupState.FAILED
    assert page.reason == "stick is full"
    page, _, _ = choose_page({"usb": _usb_state({"backup_state": 2})}, None, 0.0)
    assert isinstance(page, UsbBackupPage) and page.state is UsbBackupState.OK
    render(page)
    restored = _usb_state({"backup_state": 2, "restored_box": 0x0A1B2C3D},
                          detail="Restored box 0a1b2c3d - remove stick")
    page, _, _ = choose_page({"usb": restored}, None, 0.0)
    assert isinstance(page, UsbBackupPage) and page.headline == "Restored" and page.note == "box 0a1b2c3d"
    assert render(page) != render(UsbBackupPage(UsbBackupState.OK))
    page, _, _ = choose_page({"usb": _usb_state({"backup_state": 0})}, Payload("HEARTH:X"), 0.0)
    assert not isinstance(page, (UsbBackupPage, RecoveryWordsPage))


def test_phrase_never_in_repr(tmp_path: Path) -> None:
    assert SECRET.hex() not in repr(_contents()) and repr(SECRET) not in repr(_contents())
