"""The built image, booted under QEMU: first boot, supervisord, the OLED, Electrum, USB.

All checks share one boot (conftest ``box``); they run in file order, each waiting with
its own timeout on what the previous ones may already have seen. Timeouts are generous:
TCG emulation on two busy cores runs the Pi's first boot several times slower.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import ssl
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from PIL import Image

from appliance import __version__
from appliance.devices.pages import BootPage, render
from appliance.tor.keys import derive_onion_key

from .agecli import decrypt
from .checks import BOOT_TIMEOUT, fsck_results, wait_ready
from .conftest import KNOWN_SECRET, Box, image_path
from .vm import (
    BOOT_OFFSET,
    GUEST_CLI,
    GUEST_SETUP_PORT,
    MINE,
    electrum_request,
    make_stick,
    mtools,
)

pytestmark = [pytest.mark.firmware, pytest.mark.slow, pytest.mark.timeout(1800)]

#: What rootfs-overlay's hearth-firstboot shows on the OLED, in order, before supervisord.
FIRST_BOOT_STEPS = ("Preparing the SD card", "Making the box's keys", "Starting services")


def test_first_boot_completes(box: Box) -> None:
    box.vm.wait_for(r"hearth-firstboot: done\b", BOOT_TIMEOUT,
                    fail=r"Failed to start hearth-firstboot.*|hearth-firstboot\.service: Failed.*")
    text = box.vm.console_text()
    # The card (qcow2 overlay) is 1 GiB bigger than the image: first boot grew the data
    # partition (the slots keep their size: test_ab_layout).
    assert "hearth-firstboot: data filesystem:" in text
    # The user's file is merged over the image's: sizing (auto_size, the image's) stays on.
    assert "hearth-firstboot: using hearth.toml from the boot partition, merged over the image's: " \
        "4 setting(s) taken: hearth.network, display.simulate, display.frames_dir, button.simulate" \
        in text, text[-3000:]
    assert "hearth-firstboot: chain=regtest" in text
    assert re.search(r"hearth-firstboot: # sized for \d+ GiB of disk and [\d.]+ GiB of RAM "
                     r"\(initial block download\)", text), "bitcoin.conf not sized to the box"
    # The root was checked by the initramfs (fsck in it), the boot partition by systemd.
    fsck = fsck_results(box.vm)
    assert fsck["root filesystem"].startswith("clean (RASPIROOT: clean, "), fsck
    assert fsck["boot partition"].startswith("clean ("), fsck
    assert fsck["data partition"].startswith("clean (HEARTHDATA: clean, "), fsck
    cmdline = mtools("mtype", "-i", f"{image_path()}@@{BOOT_OFFSET}", "::/cmdline.txt").stdout
    assert "fsck.repair=yes" in cmdline.split(), cmdline
    print(f"first boot done {time.time() - box.vm.started:.0f} s after QEMU started")
    # The OLED was lit all through first boot: its first frames are the steps, drawn by
    # the image's own code before supervisord started the display service.
    first = sorted(box.vm.frames.glob("frame-*.png"))[:len(FIRST_BOOT_STEPS)]
    assert [f.name for f in first] == [f"frame-{n:06d}.png" for n in (1, 2, 3)], first
    for png, step in zip(first, FIRST_BOOT_STEPS, strict=True):
        expected = render(BootPage("First boot", detail=step, version=__version__))
        assert Image.open(png).convert("1").tobytes() == expected.tobytes(), f"{png.name}: not {step!r}"
    lit = first[0].stat().st_mtime - box.vm.started
    print(f"OLED lit {lit:.0f} s after QEMU started (first boot's first step)")
    (box.vm.workdir / "boot-to-first-frame.json").write_text(json.dumps({"seconds": lit}))


def test_every_program_running(box: Box) -> None:
    wait_ready(box.vm)
    print(f"all programs RUNNING {time.time() - box.vm.started:.0f} s after QEMU started")


def test_tor_runs_with_the_onion_key_derived_from_the_box_secret(box: Box) -> None:
    """The guest has no network, so tor cannot bootstrap (it stays at a low percentage);
    what can be checked: hearth-tor and its tor child run, and the hostname tor keeps in the
    HiddenServiceDir is the documented derivation from the restored box secret
    (docs/identity.md). Until the first-boot restore is done the box runs on the secret
    it made itself; the USB agent restarts hearth-tor with the restored one."""
    box.pull_restore_stick()
    wait_ready(box.vm)
    vm = box.vm
    expected = derive_onion_key(KNOWN_SECRET).address
    deadline = time.monotonic() + 180
    while (hostname := vm.ssh("cat /var/lib/hearth/tor/onion/hostname",
                              check=False).strip()) != expected:
        assert time.monotonic() < deadline, f"onion hostname {hostname!r}, expected {expected}"
        time.sleep(5)
    assert "RUNNING" in vm.ssh("supervisorctl status hearth-tor")
    assert vm.ssh("pgrep -u hearth -x tor", check=False).strip(), "no tor process as hearth"
    assert vm.ssh("stat -c %a:%U /var/lib/hearth/tor/onion/hs_ed25519_secret_key").strip() \
        == "600:hearth"
    found = json.loads(vm.ssh("/opt/hearth/venv/bin/appliance tor address --json "
                              "--config /etc/hearth/hearth.toml"))
    assert found["onion"] == expected and found["electrum_tcp"].startswith(expected + ":")


def decode_qr(png: Path, tmp: Path) -> str | None:
    frame = Image.open(png)
    big = tmp / "frame-x4.png"
    frame.resize((frame.width * 4, frame.height * 4), Image.Resampling.NEAREST).save(big)
    out = subprocess.run(["zbarimg", "--raw", "-q", str(big)], capture_output=True, text=True)
    return out.stdout.strip() or None


def test_display_shows_the_pairing_qr(box: Box, tmp_path: Path) -> None:
    """The guest's display service writes its frames to the 9p share; the first frame whose
    QR decodes to the setup page's pairing link gives boot-to-QR (host clock, from QEMU's
    start). The link is what a phone camera opens: ``HTTPS://<lan-ip>:8443/P/<TOKEN>``."""
    box.pull_restore_stick()
    deadline = time.monotonic() + BOOT_TIMEOUT
    seen: set[str] = set()
    while time.monotonic() < deadline:
        for png in sorted(box.vm.frames.glob("frame-*.png")):
            if png.name in seen:
                continue
            seen.add(png.name)
            payload = decode_qr(png, tmp_path)
            # The pairing page alternates with the stock-wallet page (a QR of host:port:s).
            if payload and payload.startswith("HTTPS://"):
                qr_at = png.stat().st_mtime - box.vm.started
                # The guest's address on QEMU's user net, the setup port, a one-use token.
                assert re.fullmatch(rf"HTTPS://10\.0\.2\.15:{GUEST_SETUP_PORT}/P/[A-Z2-7]+",
                                    payload), payload
                box.setup_link = payload
                print(f"boot-to-QR {qr_at:.0f} s (frame {png.name}, {len(seen)} frames)")
                (box.vm.workdir / "boot-to-qr.json").write_text(json.dumps({"seconds": qr_at}))
                return
        time.sleep(2)
    pytest.fail(f"no pairing QR in {len(seen)} frames from the guest ({box.vm.frames})")


def test_setup_page_through_the_port_forward(box: Box) -> None:
    """A phone's first visit, from the host through QEMU's forward of the setup port: the
    OLED's link pairs this client (a Secure, HttpOnly, SameSite=Strict session cookie),
    the page answers only with that cookie, and the certificate is the box's own."""
    if box.setup_link is None:
        pytest.skip("no setup link decoded from the OLED (see the pairing QR test)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # self-signed: compared with the guest's file below

    def get(path: str, cookie: str | None = None) -> tuple[int, dict[str, str], str, str]:
        """Status, headers, body and the served certificate's SHA-256."""
        conn = http.client.HTTPSConnection("127.0.0.1", box.vm.setup_port, context=ctx,
                                           timeout=120)
        try:
            conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
            resp = conn.getresponse()
            assert isinstance(conn.sock, ssl.SSLSocket)
            der = conn.sock.getpeercert(binary_form=True)
            assert der is not None
            return (resp.status, {k.lower(): v for k, v in resp.getheaders()},
                    resp.read().decode(errors="replace"), hashlib.sha256(der).hexdigest())
        finally:
            conn.close()

    link_path = "/" + box.setup_link.split("/", 3)[3]
    assert get("/")[0] == 403  # nothing without a session
    status, headers, page, served = get(link_path)
    assert status == 200, page
    cookie = headers["set-cookie"]
    assert {"HttpOnly", "Secure", "SameSite=Strict"} <= {p.strip() for p in cookie.split(";")}
    status, _, page, _ = get("/", cookie.split(";")[0])
    assert status == 200 and "Add a wallet" in page, page
    # The page's certificate is the box's Electrum TLS identity (the indexer's file).
    guest = box.vm.ssh(
        "/opt/hearth/venv/bin/python -c 'import hashlib, ssl, sys; print(hashlib.sha256("
        "ssl.PEM_cert_to_DER_cert(open(sys.argv[1]).read())).hexdigest())' "
        "\"$(find /var/lib/hearth -name electrum-cert.pem | head -n 1)\"")
    assert served == guest.strip(), (served, guest)
    # A used link pairs no one else.
    status, headers, _, _ = get(link_path)
    assert status != 200 and "set-cookie" not in headers


def test_electrum_port_answers_server_version(box: Box) -> None:
    reply = electrum_request(box.vm.electrum_port, "server.version", ["hearth-firmware-test", "1.4"])
    assert reply[1] == "1.4", reply


_UTXO_CACHE = re.compile(r"Using ([\d.]+) MiB for in-memory UTXO set")


def test_dbcache_lowered_after_the_initial_sync(box: Box) -> None:
    """First boot wrote bitcoin.conf for the initial sync (big dbcache, the marker); the
    first recent block ends it: the node service (user hearth) rewrites the file, keeping
    it readable by bitcoind, and has supervisord restart bitcoind with the steady cache."""
    vm = box.vm
    vm.wait_ssh(300)
    conf = "/etc/bitcoin/bitcoin.conf"
    assert vm.ssh(f"stat -c '%a %U %G' /etc/bitcoin {conf}").split("\n")[:2] == \
        ["750 hearth bitcoin", "640 hearth bitcoin"]
    before = vm.ssh(f"cat {conf}")
    ibd = int(re.search(r"^dbcache=(\d+)", before, re.M).group(1))  # type: ignore[union-attr]
    steady = int(re.search(r"after initial block download dbcache=(\d+)", before)  # type: ignore[union-attr]
                 .group(1))
    assert steady < ibd, before
    assert json.loads(vm.ssh(f"{GUEST_CLI} getblockchaininfo"))["initialblockdownload"] is True
    vm.ssh(MINE.format(n=1))  # a block with a recent time: the sync is over
    log = "/var/log/supervisor/bitcoind.log"
    deadline = time.monotonic() + 600
    while True:
        sizes = [float(x) for x in _UTXO_CACHE.findall(vm.ssh(f"cat {log}", check=False))]
        if len(sizes) >= 2 and "RUNNING" in vm.ssh("supervisorctl status bitcoind", check=False):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"bitcoind was not restarted with a smaller cache: {sizes}; "
                        + vm.ssh("tail -5 /var/log/supervisor/hearth-node.log", check=False))
        time.sleep(5)
    after = vm.ssh(f"cat {conf}")
    assert f"dbcache={steady}" in after and "after initial block download" not in after
    assert vm.ssh(f"stat -c '%a %U %G' {conf}").strip() == "640 hearth bitcoin"
    assert sizes[-1] < sizes[0], sizes
    print(f"dbcache {ibd} MiB during the initial sync, {steady} MiB after "
          f"(bitcoind's UTXO cache {sizes[0]:.0f} -> {sizes[-1]:.0f} MiB)")


def test_hot_plugged_stick_receives_a_backup_that_decrypts(box: Box, tmp_path: Path) -> None:
    if box.phrase is None:
        pytest.fail(f"{box.phrase_error}")
    stick = tmp_path / "empty-stick.img"
    make_stick(stick, {}, label="BACKUP")
    box.vm.hotplug_stick(stick)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(10)
        try:
            listing = mtools("mdir", "-b", "-i", str(stick), "::/HEARTH").stdout.split()
        except subprocess.CalledProcessError:
            continue  # no HEARTH/ yet (or the guest is mid-write)
        backups = sorted(p for p in listing if p.endswith(".age"))
        if not backups:
            continue
        local = tmp_path / Path(backups[-1]).name
        source = backups[-1] if backups[-1].startswith("::") else f"::{backups[-1]}"  # mdir -b: ::/path
        mtools("mcopy", "-o", "-i", str(stick), source, str(local))
        try:
            payload = decrypt(local, tmp_path / "payload.tar", box.phrase)
        except Exception:  # noqa: BLE001 - half-written file: try again on the next round
            continue
        with tarfile.open(tmp_path / "payload.tar") as tar:
            names = tar.getnames()
            member = tar.extractfile("hsm_secret")
            assert member is not None, names
            assert member.read() == KNOWN_SECRET, "the backup holds another secret than the restored one"
            assert "metadata.json" in names
        assert payload
        return
    pytest.fail("no decryptable HEARTH/*.age on the hot-plugged stick after 600 s")


#: Written to the system slot by the OS itself, not by a Hearth service: systemd's and
#: chrony's state, the SSH key the test installs for root (ssh drop-in), apt/ldconfig caches.
SLOT_WRITERS_ALLOWED = ("/etc/machine-id", "/var/lib/systemd/", "/var/lib/chrony/", "/var/cache/",
                        "/root/.ssh/", "/var/lib/dbus/", "/var/lib/private/", "/etc/.pwd.lock")


def test_ab_layout(box: Box) -> None:
    """Boot, slot A, slot B, data: root is slot A, first boot grew data (not the slots), the
    state directories are data's, RAUC sees both slots with Hearth's backend, and nothing
    a Hearth service wrote landed on the system slot."""
    vm = box.vm
    vm.wait_ssh(300)
    box.pull_restore_stick()
    wait_ready(vm)
    sizes = {name: int(size) for name, size in (
        line.split() for line in vm.ssh("lsblk -b -n -l -o NAME,SIZE /dev/vda").splitlines())}
    assert sizes["vda2"] == sizes["vda3"] == 1536 << 20, sizes
    assert sizes["vda4"] > 900 << 20, f"data not grown at first boot: {sizes}"
    assert vm.ssh("findmnt -n -o SOURCE /").strip() == "/dev/vda2"
    assert "rauc.slot=A" in vm.ssh("cat /proc/cmdline").split()
    for path, sub in (("/var/lib/hearth", "/hearth"), ("/var/lib/bitcoind", "/bitcoind"),
                      ("/etc/hearth", "/etc/hearth"), ("/etc/bitcoin", "/etc/bitcoin"),
                      ("/var/log/supervisor", "/log/supervisor")):
        assert vm.ssh(f"findmnt -n -o SOURCE {path}").strip() == f"/dev/vda4[{sub}]", path
    status = json.loads(vm.ssh("rauc status --output-format=json"))
    assert status["compatible"] == "hearth-arm64" and status["booted"] == "A", status
    assert vm.ssh("/usr/lib/hearth/rauc-backend get-primary").strip() == "A"
    assert vm.ssh("cat /etc/hearth-release").startswith("VERSION=0.1.0")
    assert re.search(r"hearth-health: slot A \(Hearth [\d.]+\) is the permanent slot", vm.console_text())
    epoch = int(vm.ssh("sed -n 's/^HEARTH_IMAGE_EPOCH=//p' /etc/hearth-release"))
    written = vm.ssh(f"find / -xdev -type f -newermt @{epoch + 1}").split()
    by_services = [p for p in written if not p.startswith(SLOT_WRITERS_ALLOWED)]
    print(f"files written on slot A since the build: {len(written)}; not the OS's own: {by_services}")
    assert not [p for p in by_services if re.search(r"hearth|bitcoin|supervisor|tor", p)], by_services
