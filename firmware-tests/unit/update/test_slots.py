"""The A/B boot files RAUC's custom backend keeps (appliance.update.slots), on a directory
laid out like the image's boot partition, driven through the backend's own command line
(the verbs RAUC calls) and through its API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance.update import slots
from appliance.update.slots import BootFiles, SlotError

CONFIG = ("arm_64bit=1\nkernel=vmlinuz\ninitramfs initrd.img\n\n[all]\n"
          "# Hearth A/B: the slot to boot\ninclude hearth-slot.txt\n")


@pytest.fixture
def boot(tmp_path: Path) -> Path:
    d = tmp_path / "boot"
    d.mkdir()
    (d / "config.txt").write_text(CONFIG)
    (d / "cmdline-A.txt").write_text("root=PARTUUID=48454152-02 rauc.slot=A rw\n")
    (d / "cmdline-B.txt").write_text("root=PARTUUID=48454152-03 rauc.slot=B rw\n")
    BootFiles(d).init("A")
    return d


def backend(boot: Path, running: str, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    cmdline = boot.parent / "cmdline"
    cmdline.write_text(f"console=ttyAMA0 root=PARTUUID=x rauc.slot={running} rw\n")
    code = slots.main(["--boot-dir", str(boot), "--cmdline", str(cmdline), *args])
    return code, capsys.readouterr().out.strip()


def firmware_choice(boot: Path, try_flag: bool) -> str:
    """What the Pi firmware boots: tryboot.txt instead of config.txt when the flag is set
    (and the file exists); its cmdline= (or the included file's) names the slot."""
    text = (boot / "tryboot.txt").read_text() if try_flag and (boot / "tryboot.txt").exists() \
        else (boot / "config.txt").read_text()
    if "include hearth-slot.txt" in text:
        text = text.replace("include hearth-slot.txt", (boot / "hearth-slot.txt").read_text())
    found = re.findall(r"^cmdline=cmdline-([AB])\.txt", text, re.M)
    assert len(found) == 1, text
    return found[0]


def test_fresh_card_boots_a_which_is_good(boot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert backend(boot, "A", "get-primary", capsys=capsys) == (0, "A")
    assert backend(boot, "A", "get-current", capsys=capsys) == (0, "A")
    assert backend(boot, "A", "get-state", "A", capsys=capsys) == (0, "good")
    assert backend(boot, "A", "get-state", "B", capsys=capsys) == (0, "bad")
    assert firmware_choice(boot, False) == firmware_choice(boot, True) == "A"


def test_install_try_mark_good_makes_b_permanent(boot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # rauc install on A: the target marked bad, written, then made primary.
    assert backend(boot, "A", "set-state", "B", "bad", capsys=capsys)[0] == 0
    assert backend(boot, "A", "set-primary", "B", capsys=capsys)[0] == 0
    assert backend(boot, "A", "get-primary", capsys=capsys) == (0, "B")
    # An ordinary reboot (or a reset during the try) still starts A; only the flag tries B.
    assert firmware_choice(boot, False) == "A"
    assert firmware_choice(boot, True) == "B"
    tryboot = (boot / "tryboot.txt").read_text()
    assert "kernel=vmlinuz" in tryboot and "include" not in tryboot  # config.txt otherwise
    # The health program on B: rauc status mark-good.
    assert backend(boot, "B", "set-state", "B", "good", capsys=capsys)[0] == 0
    assert not (boot / "tryboot.txt").exists()
    assert firmware_choice(boot, False) == "B"
    assert backend(boot, "B", "get-state", "B", capsys=capsys) == (0, "good")
    assert BootFiles(boot).is_try_boot("B") is False


def test_mark_bad_during_try_falls_back(boot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    BootFiles(boot).set_state("B", "bad", "A")
    BootFiles(boot).set_primary("B", "A")
    assert BootFiles(boot).is_try_boot("B")
    assert backend(boot, "B", "set-state", "B", "bad", capsys=capsys)[0] == 0
    assert not (boot / "tryboot.txt").exists()
    assert firmware_choice(boot, False) == firmware_choice(boot, True) == "A"
    assert backend(boot, "A", "get-state", "B", capsys=capsys) == (0, "bad")


def test_new_install_cancels_an_armed_try(boot: Path) -> None:
    files = BootFiles(boot)
    files.set_primary("B", "A")
    files.set_state("B", "bad", "A")  # the next install starts by marking its target bad
    assert files.trying() is None and firmware_choice(boot, True) == "A"


def test_set_primary_of_running_or_permanent_slot(boot: Path) -> None:
    files = BootFiles(boot)
    files.set_primary("A", "A")
    assert files.trying() is None and files.permanent() == "A"
    files.set_primary("B", "A")
    files.set_primary("B", "B")  # rauc status mark-active on the try slot: permanent now
    assert files.permanent() == "B" and files.trying() is None


def test_bad_input_refused_and_nothing_changed(boot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {p.name: p.read_bytes() for p in boot.iterdir()}
    for args in (["set-primary", "C"], ["get-state", "a"], ["set-state", "B", "ok"], ["set-state", "B"]):
        cmdline = boot.parent / "cmdline"
        cmdline.write_text("rauc.slot=A\n")
        assert slots.main(["--boot-dir", str(boot), "--cmdline", str(cmdline), *args]) == 1
    assert "rauc-backend" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in boot.iterdir()} == before
    # No rauc.slot= on the command line: get-current fails rather than guess.
    (boot.parent / "cmdline").write_text("root=/dev/vda2\n")
    assert slots.main(["--boot-dir", str(boot), "--cmdline", str(boot.parent / "cmdline"),
                       "get-current"]) == 1


def test_damaged_slot_file_is_an_error(boot: Path) -> None:
    (boot / "hearth-slot.txt").write_text("cmdline=cmdline-A.txt\ncmdline=cmdline-B.txt\n")
    with pytest.raises(SlotError, match="expected one"):
        BootFiles(boot).permanent()


def test_reboot_into_other_slot(boot: Path) -> None:
    calls: list[list[str]] = []
    files = BootFiles(boot)
    with pytest.raises(SlotError, match="no slot is armed"):
        slots.reboot_into_other_slot(files, qemu=False, run=lambda a: calls.append(list(a)))
    files.set_primary("B", "A")
    slots.reboot_into_other_slot(files, qemu=False, run=lambda a: calls.append(list(a)))
    assert calls == [["systemctl", "reboot", "0 tryboot"]]
    assert not (boot / slots.QEMU_FLAG_FILE).exists()
    slots.reboot_into_other_slot(files, qemu=True, run=lambda a: calls.append(list(a)))
    assert calls[-1] == ["systemctl", "reboot"]
    nonce = (boot / slots.QEMU_FLAG_FILE).read_text()
    slots.reboot_into_other_slot(files, qemu=True, run=lambda a: calls.append(list(a)))
    assert (boot / slots.QEMU_FLAG_FILE).read_text() != nonce  # each request a fresh one-shot


def test_qemu_detection(tmp_path: Path) -> None:
    (tmp_path / "c").write_bytes(b"linux,dummy-virt\x00")
    (tmp_path / "pi").write_bytes(b"raspberrypi,4-model-b\x00brcm,bcm2711\x00")
    assert slots.running_under_qemu(tmp_path / "c")
    assert not slots.running_under_qemu(tmp_path / "pi")
    assert not slots.running_under_qemu(tmp_path / "missing")


@pytest.mark.parametrize("content", [b"", b"\x00" * 14, b"A=go", b"B=bad\n"])
def test_a_state_file_lost_in_a_power_cut_keeps_the_permanent_slot_good(
        boot: Path, content: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    """The FAT has no journal: a cut during an install left hearth-slot-state.txt empty
    on the emulated card. The permanent slot reads good (it became permanent only as a
    good slot), the other bad, and the next write records that, not "A=bad"."""
    (boot / "hearth-slot-state.txt").write_bytes(content)
    assert backend(boot, "A", "get-state", "A", capsys=capsys) == (0, "good")
    assert backend(boot, "A", "get-state", "B", capsys=capsys) == (0, "bad")
    assert backend(boot, "A", "set-state", "B", "bad", capsys=capsys)[0] == 0
    assert (boot / "hearth-slot-state.txt").read_text() == "A=good\nB=bad\n"
    (boot / "hearth-slot-state.txt").unlink()
    assert BootFiles(boot).states() == {"A": "good", "B": "bad"}
