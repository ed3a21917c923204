"""The image's disk assembly (image/assemble) and manifest (image/manifest) on a tiny tree.

The CI check of the image recipe: the real tools (sfdisk, mkfs.vfat + mtools, mkfs.ext4 -d,
debugfs) on a few files instead of a 1 GiB root, so it runs in seconds. The full build and
its QEMU boot are `./build.sh test --firmware` (firmware-tests/image/).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ASSEMBLE = REPO / "image" / "assemble"
MANIFEST = REPO / "image" / "manifest"
SDE = "1767225600"  # 2026-01-01
ENV = {**os.environ, "SOURCE_DATE_EPOCH": SDE, "BOOT_MIB": "40", "ROOT_HEADROOM_MIB": "8",
       "SLOT_MIB": "24", "DATA_MIB": "12", "MTOOLS_SKIP_CHECK": "1"}


def tree(base: Path) -> tuple[Path, Path]:
    boot, root, data = base / "boot", base / "root", base / "data"
    (data / "hearth").mkdir(parents=True)
    (data / "hearth" / "marker").write_text("data\n")
    (boot / "overlays").mkdir(parents=True)
    (boot / "config.txt").write_text("arm_64bit=1\ndtparam=i2c_arm=on\n")
    (boot / "cmdline.txt").write_text("root=LABEL=RASPIROOT rw\n")
    (boot / "overlays" / "a.dtbo").write_bytes(b"\xd0\x0d\xfe\xed" * 100)
    (root / "etc" / "hearth").mkdir(parents=True)
    (root / "boot" / "firmware").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("hearth\n")
    secret = root / "etc" / "hearth" / "secret"
    secret.write_bytes(b"\x01" * 32)
    secret.chmod(0o600)
    (root / "etc" / "link").symlink_to("hostname")
    if os.geteuid() == 0:
        os.chown(secret, 1000, 1000)
    return boot, root


def assemble(boot: Path, root: Path, out: Path, *extra: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """image/assemble with the data tree tree() made next to ``root``."""
    return subprocess.run([str(ASSEMBLE), str(boot), str(root), str(root.parent / "data"), str(out),
                           *map(str, extra)],
                          capture_output=True, text=True, env={**ENV, **env}, timeout=120)


def partition(img: Path, number: int, dest: Path) -> Path:
    table = json.loads(subprocess.run(["sfdisk", "-J", str(img)], check=True, capture_output=True,
                                      text=True).stdout)["partitiontable"]
    p = table["partitions"][number - 1]
    with img.open("rb") as src, dest.open("wb") as dst:
        src.seek(p["start"] * 512)
        dst.write(src.read(p["size"] * 512))
    return dest


def test_layout_filesystems_and_contents(tmp_path: Path) -> None:
    boot, root = tree(tmp_path)
    img = tmp_path / "disk.img"
    rootfs = tmp_path / "rootfs.ext4"
    r = assemble(boot, root, img, rootfs)
    assert r.returncode == 0, r.stderr
    table = json.loads(subprocess.run(["sfdisk", "-J", str(img)], check=True, capture_output=True,
                                      text=True).stdout)["partitiontable"]
    assert table["label"] == "dos" and table["id"] == "0x48454152"
    p1, p2, p3, p4 = table["partitions"]
    assert (p1["start"], p1["size"], p1["type"], p1.get("bootable")) == (8192, 40 * 2048, "c", True)
    # boot, slot A, slot B (same size), data last (the one first boot grows).
    assert p2["start"] == p1["start"] + p1["size"] and p2["type"] == "83" and p2["size"] == 24 * 2048
    assert p3["start"] == p2["start"] + p2["size"] and p3["size"] == p2["size"]
    assert p4["start"] == p3["start"] + p3["size"] and p4["size"] == 12 * 2048
    assert (p4["start"] + p4["size"]) * 512 == img.stat().st_size
    with img.open("rb") as f:  # slot B is empty until RAUC writes it
        f.seek(p3["start"] * 512)
        assert f.read(p3["size"] * 512).count(0) == p3["size"] * 512
    data = partition(img, 4, tmp_path / "data.ext4")
    head = subprocess.run(["dumpe2fs", "-h", str(data)], check=True, capture_output=True, text=True).stdout
    assert "Filesystem volume name:   HEARTHDATA" in head
    assert subprocess.run(["debugfs", "-R", "cat /hearth/marker", str(data)], check=True,
                          capture_output=True, text=True).stdout == "data\n"

    fat = f"{img}@@{8192 * 512}"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    info = subprocess.run(["minfo", "-i", fat], check=True, capture_output=True, text=True, env=env).stdout
    assert "RASPIFIRM" in info
    got = subprocess.run(["mtype", "-i", fat, "::/config.txt"], check=True, capture_output=True,
                         text=True, env=env).stdout
    assert got == (boot / "config.txt").read_text()
    listing = subprocess.run(["mdir", "-b", "-i", fat, "::/overlays"], check=True, capture_output=True,
                             text=True, env=env).stdout
    assert "a.dtbo" in listing

    ext = partition(img, 2, tmp_path / "root.ext4")
    # The bundle's root filesystem is slot A's, byte for byte.
    assert ext.read_bytes()[:rootfs.stat().st_size] == rootfs.read_bytes()
    subprocess.run(["e2fsck", "-fn", str(ext)], check=True, capture_output=True)
    head = subprocess.run(["dumpe2fs", "-h", str(ext)], check=True, capture_output=True, text=True).stdout
    assert "Filesystem volume name:   RASPIROOT" in head
    stat = subprocess.run(["debugfs", "-R", "stat /etc/hearth/secret", str(ext)], check=True,
                          capture_output=True, text=True).stdout
    assert "Mode:  0600" in stat
    if os.geteuid() == 0:
        assert "User:  1000" in stat
    link = subprocess.run(["debugfs", "-R", "stat /etc/link", str(ext)], check=True,
                          capture_output=True, text=True).stdout
    assert 'Fast link dest: "hostname"' in link
    cat = subprocess.run(["debugfs", "-R", "cat /etc/hostname", str(ext)], check=True,
                         capture_output=True, text=True).stdout
    assert cat == "hearth\n"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_tree_same_bytes(tmp_path: Path) -> None:
    """Reproducible: times come from SOURCE_DATE_EPOCH, not from when files were made or read."""
    boot, root = tree(tmp_path)
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    assert assemble(boot, root, a).returncode == 0
    (root / "etc" / "hostname").write_text("hearth\n")  # rewritten (new mtime, ctime), same bytes
    (boot / "config.txt").read_bytes()  # read: atime moves
    assert assemble(boot, root, b).returncode == 0
    assert sha256(a) == sha256(b)
    c = tmp_path / "c.img"
    assert assemble(boot, root, c, SOURCE_DATE_EPOCH="1767225601").returncode == 0
    assert sha256(c) != sha256(a)  # the epoch is an input, so it must show


def test_bad_input_is_refused_clearly(tmp_path: Path) -> None:
    boot, root = tree(tmp_path)
    r = assemble(boot, tmp_path / "nope", tmp_path / "x.img")
    assert r.returncode != 0 and "no directory" in r.stderr
    assert not (tmp_path / "x.img").exists()
    r = subprocess.run([str(ASSEMBLE), str(boot), str(root), str(tmp_path / "data"), str(tmp_path / "y.img")],
                       capture_output=True,
                       text=True, env={k: v for k, v in ENV.items() if k != "SOURCE_DATE_EPOCH"})
    assert r.returncode != 0 and "SOURCE_DATE_EPOCH" in r.stderr
    # A boot tree that does not fit the FAT partition fails, and leaves no image behind.
    (boot / "big.bin").write_bytes(os.urandom(1024) * 50 * 1024)
    r = assemble(boot, root, tmp_path / "z.img")
    assert r.returncode != 0
    assert not (tmp_path / "z.img").exists()
    # A root filesystem bigger than a slot is refused: a slot cannot grow after flashing.
    (boot / "big.bin").unlink()
    (root / "big.bin").write_bytes(os.urandom(1024) * 20 * 1024)
    r = assemble(boot, root, tmp_path / "w.img")
    assert r.returncode != 0 and "more than a slot" in r.stderr
    assert not (tmp_path / "w.img").exists()


def test_manifest_lists_debs_and_wheels_sorted(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(
        "Package: zlib1g\nStatus: install ok installed\nArchitecture: arm64\nVersion: 1:1.3\n\n"
        "Package: bitcoin-knots\nStatus: install ok installed\nArchitecture: arm64\n"
        "Version: 29.4.knots20260508.3-1\n\n")
    dist = root / "opt/hearth/venv/lib/python3.13/site-packages/segno-1.6.6.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: segno\nVersion: 1.6.6\n")
    out = subprocess.run([str(MANIFEST), str(root), "0.1.0"], check=True, capture_output=True,
                         text=True).stdout.splitlines()
    body = [line for line in out if not line.startswith("#")]
    assert body == ["deb\tbitcoin-knots\t29.4.knots20260508.3-1\tarm64", "deb\tzlib1g\t1:1.3\tarm64",
                    "pypi\tsegno\t1.6.6\taarch64"]


@pytest.mark.parametrize("tool", ["sfdisk", "mkfs.vfat", "mcopy", "mkfs.ext4", "debugfs"])
def test_tools_present(tool: str) -> None:
    """scripts/depends.d/test.txt installs them; say which is missing rather than fail obscurely."""
    from shutil import which
    assert which(tool) or which(tool, path="/usr/sbin:/sbin"), f"{tool} missing (scripts/depends test)"
