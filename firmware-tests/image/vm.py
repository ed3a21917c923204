"""Boot the built SD-card image under QEMU, the way the firmware tests need it.

The image under test is never modified: a sparse working copy gets the test's
``hearth.toml`` on its boot partition (the same mechanism a user has: a file dropped on
the card before the first boot), and QEMU writes only to a throw-away qcow2 overlay of
that copy. The kernel and initramfs are the image's own, read from its FAT partition.

Machine: ``virt``, Cortex-A53, 2 vCPUs, TCG (KVM hangs guests on the test machines), a
virtio disk, user networking with the Electrum, SSH, tower, setup-page, Noise (pairing) and
backup-agent ports forwarded, a qemu-xhci USB controller for sticks plugged at boot or hot-plugged over
QMP, and a 9p share the display service writes its frames to (mounted by
``systemd.mount-extra=`` on the test's kernel command line, so nothing test-only is in
the image).

**The Pi firmware's slot choice is emulated** (docs/image.md, "A/B slots"): before each
power-on the harness reads the card's boot partition the way the firmware does: normally
``config.txt`` (its ``include hearth-slot.txt`` gives ``cmdline=cmdline-X.txt``); on a try
boot ``tryboot.txt`` instead. The Pi's one-shot try flag (``reboot '0 tryboot'``) lives in
the firmware, not on the card; here the guest writes ``hearth-tryboot.flag`` holding a fresh
nonce and the harness honours each nonce once, then forgets it (a reset during the try
boots the permanent slot again). The chosen file's ``root=`` and ``rauc.slot=`` go on
QEMU's kernel command line; kernel and initramfs are the boot partition's (shared by
both slots).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from functional.framework.util import free_port

BOOT_OFFSET = 4 * 1024 * 1024  # image/assemble: the FAT partition starts at 4 MiB
DATA_PARTITION = 4  # image/assemble: boot, slot A, slot B, data
TRYBOOT_FLAG = "hearth-tryboot.flag"  # appliance/update/slots.py QEMU_FLAG_FILE
GUEST_ELECTRUM_PORT = 50001
GUEST_SSH_PORT = 22
GUEST_TOWER_PORT = 9814
GUEST_SETUP_PORT = 8443  # the phone setup page (HTTPS)
GUEST_NOISE_PORT = 50003  # the pairing gate (and Noise for paired clients)
GUEST_BACKUP_PORT = 50004  # the channel-state backup agent
FRAMES_TAG = "hearthframes"
GUEST_FRAMES_DIR = "/var/lib/hearth/frames"


#: bitcoin-cli as root in the guest, with the image's bitcoin.conf and RPC cookie.
#: -rpcwait: bitcoind may be restarting (the node service's dbcache switch after the sync).
GUEST_APPLIANCE = "/opt/hearth/venv/bin/appliance"
GUEST_CLI = ("bitcoin-cli -conf=/etc/bitcoin/bitcoin.conf -datadir=/var/lib/bitcoind "
             "-rpccookiefile=/run/bitcoind/.cookie -rpcwait -rpcwaittimeout=300")
#: Blocks mined in the guest pay OP_TRUE: the box holds no wallet.
MINE = f"{GUEST_CLI} generatetodescriptor {{n}} 'raw(51)'"


class VMError(Exception):
    pass


def mtools(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    return subprocess.run(list(args), check=True, capture_output=True, text=True, env=env)


def boot_files(image: Path) -> tuple[str, str]:
    """The kernel and initramfs names on the image's boot partition."""
    listing = mtools("mdir", "-b", "-i", f"{image}@@{BOOT_OFFSET}", "::/").stdout.split()
    names = [Path(p).name for p in listing]
    kernels = sorted(n for n in names if n.startswith("vmlinuz-"))
    initrds = sorted(n for n in names if n.startswith("initrd.img-"))
    if not kernels or not initrds:
        raise VMError(f"no vmlinuz-*/initrd.img-* on the boot partition of {image}: {names}")
    return kernels[-1], initrds[-1]


def _config_cmdline(text: str, read: Any) -> str:
    """The command-line file a firmware config names (one level of ``include``)."""
    lines: list[str] = []
    for line in text.splitlines():
        if line.strip().startswith("include "):
            lines += (read(line.split(None, 1)[1].strip()) or "").splitlines()
        else:
            lines.append(line)
    names = [ln.split("=", 1)[1].strip() for ln in lines if ln.strip().startswith("cmdline=")]
    return names[-1] if names else "cmdline.txt"


def firmware_cmdline(fat: Path, consumed: set[str]) -> tuple[str, bool]:
    """The kernel command line the Pi firmware would boot from this boot partition image,
    and whether it was a try boot (a tryboot flag not yet consumed; it is consumed now)."""
    def read(name: str) -> str | None:
        listing = mtools("mdir", "-b", "-i", str(fat), "::/").stdout.split()
        if not any(Path(p).name.lower() == name.lower() for p in listing):
            return None
        return mtools("mtype", "-i", str(fat), f"::/{name}").stdout

    flag = (read(TRYBOOT_FLAG) or "").strip()
    tried = bool(flag) and flag not in consumed
    if tried:
        consumed.add(flag)
    config = (read("tryboot.txt") if tried else None) or read("config.txt") or ""
    name = _config_cmdline(config, read)
    cmdline = read(name)
    if cmdline is None:
        raise VMError(f"the boot partition has no {name} (named by its config)")
    return cmdline.strip(), tried


def make_stick(path: Path, files: dict[str, bytes], size_mib: int = 64, label: str = "STICK") -> None:
    """A FAT32 USB stick image holding ``files`` (names relative to its root)."""
    path.unlink(missing_ok=True)
    subprocess.run(["mkfs.vfat", "-F", "32", "-n", label, "-C", str(path), str(size_mib * 1024)],
                   check=True, capture_output=True)
    staging = path.with_suffix(".files")
    shutil.rmtree(staging, ignore_errors=True)
    for name, data in files.items():
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    # mmd makes one level at a time: every ancestor, parents first (HEARTH, HEARTH/update).
    for d in sorted({str(p) for n in files for p in Path(n).parents} - {"."}):
        mtools("mmd", "-D", "s", "-i", str(path), f"::/{d}")
    for name in sorted(files):
        mtools("mcopy", "-o", "-i", str(path), str(staging / name), f"::/{name}")


def electrum_request(port: int, method: str, params: list[Any], timeout: float = 300) -> Any:
    """One Electrum call to the guest over the user-net forward (after ``server.version``,
    as a wallet does), retried until it answers (user-net accepts, then drops, until the
    guest listens); its ``result``."""
    calls = [] if method == "server.version" else \
        [{"jsonrpc": "2.0", "id": 0, "method": "server.version", "params": ["hearth-test", "1.4"]}]
    calls.append({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(b"".join(json.dumps(c).encode() + b"\n" for c in calls))
                data = b""
                while data.count(b"\n") < len(calls):
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed before a reply")
                    data += chunk
            reply = next(r for r in map(json.loads, data.splitlines()) if r.get("id") == 1)
            if reply.get("error"):
                raise VMError(f"Electrum {method}: {reply['error']}")
            return reply["result"]
        except (OSError, ValueError, StopIteration) as exc:
            last = exc
            time.sleep(5)
    raise VMError(f"Electrum port {port} never answered {method}: {last}")


class QMP:
    """The QEMU machine protocol over a unix socket (JSON lines; events skipped)."""

    def __init__(self, path: Path, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise VMError(f"no QMP socket at {path}") from None
                time.sleep(0.2)
        self.sock.settimeout(timeout)
        self.buf = b""
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise VMError("QMP closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg

    def execute(self, cmd: str, **args: Any) -> Any:
        self.sock.sendall(json.dumps({"execute": cmd, "arguments": args}).encode() + b"\n")
        while True:
            msg = self._read()
            if "event" in msg:
                continue
            if "error" in msg:
                raise VMError(f"QMP {cmd}: {msg['error']}")
            return msg.get("return")

    def close(self) -> None:
        self.sock.close()


@dataclass
class VM:
    """One booted image. ``start`` returns at once; wait on the console with ``wait_for``."""

    image: Path
    workdir: Path
    boot_config: str
    usb_at_boot: list[Path] = field(default_factory=list)
    memory_mib: int = 2048
    extra_disk_mib: int = 1024  # the card is bigger than the image: first boot grows root

    def __post_init__(self) -> None:
        self.console = self.workdir / "console.log"
        self.qmp_path = self.workdir / "qmp.sock"
        self.frames = self.workdir / "frames"
        self.electrum_port = free_port()
        self.ssh_port = free_port()
        self.tower_port = free_port()
        self.setup_port = free_port()
        self.noise_port = free_port()
        self.backup_port = free_port()
        self.ssh_key = self.workdir / "ssh-key"
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp: QMP | None = None
        self.started = 0.0
        self.boots = 0
        self._usb_count = 0
        self.slot = "?"  # the slot the emulated firmware chose for the current boot
        self.tried_nonces: set[str] = set()

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        card = self.workdir / "card.raw"
        subprocess.run(["cp", "--sparse=always", str(self.image), str(card)], check=True)
        cfg = self.workdir / "hearth.toml"
        cfg.write_text(self.boot_config)
        mtools("mcopy", "-o", "-i", f"{card}@@{BOOT_OFFSET}", str(cfg), "::/hearth.toml")
        # SSH as root with a key, the way an owner switches it on (docs/image.md): the
        # tests drive bitcoind and read counters inside the guest through it.
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "firmware-test",
                        "-f", str(self.ssh_key)], check=True)
        (self.workdir / "ssh").write_bytes(b"")
        for name, src in (("ssh", self.workdir / "ssh"),
                          ("authorized_keys", self.ssh_key.with_suffix(".pub"))):
            mtools("mcopy", "-o", "-i", f"{card}@@{BOOT_OFFSET}", str(src), f"::/{name}")
        table = json.loads(subprocess.run(["sfdisk", "-J", str(card)], check=True, capture_output=True,
                                          text=True).stdout)["partitiontable"]["partitions"]
        self.boot_sectors = (int(table[0]["start"]), int(table[0]["size"]))
        kernel, initrd = boot_files(card)
        for name in (kernel, initrd):
            mtools("mcopy", "-o", "-i", f"{card}@@{BOOT_OFFSET}", f"::/{name}", str(self.workdir / name))
        self.kernel, self.initrd = self.workdir / kernel, self.workdir / initrd
        size = card.stat().st_size + self.extra_disk_mib * 1024 * 1024
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(card),
                        str(self.workdir / "overlay.qcow2"), str(size)], check=True)
        self.frames.mkdir(exist_ok=True)
        self.frames.chmod(0o777)  # the guest's hearth user writes here through 9p

    def boot_partition(self) -> Path:
        """The card's boot partition as it is now (the overlay's view), as a FAT image file."""
        fat = self.workdir / "boot-now.fat"
        start, size = self.boot_sectors
        fat.unlink(missing_ok=True)
        # In MiB (image/assemble aligns every partition to 1 MiB): sector-sized blocks take ~30 s.
        subprocess.run(["qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=1M", f"skip={start // 2048}",
                        f"count={size // 2048}", f"if={self.workdir / 'overlay.qcow2'}", f"of={fat}"],
                       check=True, capture_output=True)
        return fat

    def command(self) -> list[str]:
        cmdline, tried = firmware_cmdline(self.boot_partition(), self.tried_nonces)
        chosen = [t for t in cmdline.split() if t.startswith(("root=", "rauc.slot="))]
        self.slot = next((t.split("=", 1)[1] for t in chosen if t.startswith("rauc.slot=")), "?")
        print(f"firmware: boot {self.boots} from slot {self.slot}{' (try boot)' if tried else ''}: "
              f"{' '.join(chosen)}")
        append = " ".join([
            *chosen, "rw", "rootwait", "console=ttyAMA0", "net.ifnames=0",
            "fsck.repair=yes",  # as the image's cmdline.txt (test_boot checks it has it)
            f"systemd.mount-extra={FRAMES_TAG}:{GUEST_FRAMES_DIR}:9p:trans=virtio,version=9p2000.L,rw",
        ])
        cmd = [
            "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a53", "-smp", "2",
            "-accel", "tcg", "-m", str(self.memory_mib), "-display", "none", "-no-reboot",
            "-kernel", str(self.kernel), "-initrd", str(self.initrd), "-append", append,
            "-serial", f"file:{self.console}",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-drive", f"if=none,id=card,file={self.workdir / 'overlay.qcow2'},format=qcow2",
            "-device", "virtio-blk-pci,drive=card",
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.electrum_port}-:{GUEST_ELECTRUM_PORT}"
                       f",hostfwd=tcp:127.0.0.1:{self.ssh_port}-:{GUEST_SSH_PORT}"
                       f",hostfwd=tcp:127.0.0.1:{self.tower_port}-:{GUEST_TOWER_PORT}"
                       f",hostfwd=tcp:127.0.0.1:{self.setup_port}-:{GUEST_SETUP_PORT}"
                       f",hostfwd=tcp:127.0.0.1:{self.noise_port}-:{GUEST_NOISE_PORT}"
                       f",hostfwd=tcp:127.0.0.1:{self.backup_port}-:{GUEST_BACKUP_PORT}",
            "-device", "virtio-net-pci,netdev=net0,romfile=",
            "-virtfs", f"local,path={self.frames},mount_tag={FRAMES_TAG},security_model=none,id=frames",
            "-device", "qemu-xhci,id=xhci",
        ]
        for i, stick in enumerate(self.usb_at_boot):
            cmd += ["-drive", f"if=none,id=bootstick{i},file={stick},format=raw",
                    "-device", f"usb-storage,bus=xhci.0,drive=bootstick{i},id=bootusb{i}"]
        return cmd

    def start(self) -> None:
        self.prepare()
        self._launch()

    def _launch(self) -> None:
        self.boots += 1
        if self.boots > 1:  # one console log per boot: console.log, console-2.log, ...
            self.console = self.workdir / f"console-{self.boots}.log"
        self.console.write_bytes(b"")
        self.qmp_path.unlink(missing_ok=True)
        self.started = time.time()
        with open(self.workdir / "qemu.out", "ab") as out:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        self.qmp = QMP(self.qmp_path)
        self._usb_count = 0

    def power_cut(self) -> None:
        """Pull the plug: QEMU is killed at once, nothing is flushed or shut down. What the
        guest had not flushed to its disk is lost, as on a Pi losing power."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None

    def boot_again(self) -> None:
        """Power on again with the same card (the overlay keeps what reached the disk)."""
        assert self.proc is None, "power_cut() or stop() first"
        self._launch()

    def wait_exit(self, timeout: float) -> None:
        """The guest rebooted or powered off: QEMU (-no-reboot) exits; the card is then
        "off" until ``boot_again`` (which applies the firmware's slot choice)."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise VMError(f"the guest did not reboot within {timeout:.0f} s") from None
        self.proc = None
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None

    def edit_card(self, files: dict[str, bytes | None]) -> None:
        """With the power off: the card taken out, its boot partition edited (``None``
        deletes a file), put back. The overlay's changes go into a new raw card first."""
        assert self.proc is None, "power the guest off first"
        overlay, card = self.workdir / "overlay.qcow2", self.workdir / f"card-{self.boots}.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(overlay), str(card)], check=True)
        for name, data in files.items():
            if data is None:
                mtools("mdel", "-i", f"{card}@@{BOOT_OFFSET}", f"::/{name}")
                continue
            src = self.workdir / f"edit-{name}"
            src.write_bytes(data)
            mtools("mcopy", "-o", "-i", f"{card}@@{BOOT_OFFSET}", str(src), f"::/{name}")
        overlay.unlink()
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(card),
                        str(overlay)], check=True)

    def read_boot_file(self, name: str) -> bytes | None:
        """A file on the card's boot partition as the guest left it (power off first)."""
        assert self.proc is None, "power the guest off first"
        raw = self.workdir / "peek.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(self.workdir / "overlay.qcow2"),
                        str(raw)], check=True)
        try:
            listing = mtools("mdir", "-b", "-i", f"{raw}@@{BOOT_OFFSET}", "::/").stdout.split()
            if not any(Path(p).name.lower() == name.lower() for p in listing):
                return None
            return mtools("mtype", "-i", f"{raw}@@{BOOT_OFFSET}", f"::/{name}").stdout.encode()
        finally:
            raw.unlink(missing_ok=True)

    def ssh(self, command: str, timeout: float = 120, check: bool = True) -> str:
        """Run ``command`` as root in the guest; its stdout."""
        out = subprocess.run(
            ["ssh", "-q", "-i", str(self.ssh_key), "-p", str(self.ssh_port),
             "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20",
             "-o", "ServerAliveInterval=10", "root@127.0.0.1", command],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and out.returncode != 0:
            raise VMError(f"guest command {command!r} failed ({out.returncode}): "
                          f"{out.stderr.strip()[-500:]}")
        return out.stdout

    def push(self, local: Path, remote: str, timeout: float = 900) -> None:
        """Copy a host file into the guest (as root, over the SSH forward)."""
        subprocess.run(
            ["scp", "-q", "-i", str(self.ssh_key), "-P", str(self.ssh_port), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             str(local), f"root@127.0.0.1:{remote}"],
            check=True, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def wait_ssh(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.ssh("echo up", timeout=60, check=False).strip() == "up":
                    return
            except subprocess.TimeoutExpired:
                pass
            if self.proc is None or self.proc.poll() is not None:
                raise VMError("QEMU is not running")
            if time.monotonic() > deadline:
                raise VMError(f"no SSH into the guest within {timeout:.0f} s")
            time.sleep(5)

    def console_text(self) -> str:
        return self.console.read_bytes().decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float, fail: str | None = None) -> re.Match[str]:
        """The first match of ``pattern`` on the serial console, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.console_text()
            m = re.search(pattern, text, re.M)
            if m:
                return m
            if fail and (bad := re.search(fail, text, re.M)):
                raise VMError(f"console shows {bad.group(0)!r} ({self.console})")
            if self.proc is not None and self.proc.poll() is not None:
                raise VMError(f"QEMU exited ({self.proc.returncode}) before {pattern!r}; see "
                              f"{self.workdir / 'qemu.out'} and {self.console}")
            if time.monotonic() > deadline:
                raise VMError(f"no {pattern!r} on the console within {timeout:.0f} s; last lines:\n"
                              + "\n".join(text.splitlines()[-25:]))
            time.sleep(1)

    def hotplug_stick(self, stick: Path) -> str:
        """Plug a USB stick image in (usb-storage on the xhci bus); returns its device id."""
        assert self.qmp is not None
        self._usb_count += 1
        node, dev = f"hotstick{self._usb_count}", f"hotusb{self._usb_count}"
        self.qmp.execute("blockdev-add", **{"driver": "raw", "node-name": node,
                                            "file": {"driver": "file", "filename": str(stick)}})
        self.qmp.execute("device_add", driver="usb-storage", bus="xhci.0", drive=node, id=dev)
        return dev

    def unplug(self, dev: str) -> None:
        assert self.qmp is not None
        self.qmp.execute("device_del", id=dev)

    def stop(self) -> None:
        """Shut the guest down cleanly (so its logs reach the disk), then copy them out."""
        if self.proc is None:
            return
        try:
            if self.qmp is not None:
                self.qmp.execute("system_powerdown")
            self.proc.wait(timeout=120)  # -no-reboot: QEMU exits when the guest powers off
        except (VMError, OSError, subprocess.TimeoutExpired):
            try:
                if self.qmp is not None:
                    self.qmp.execute("quit")
            except (VMError, OSError):
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.qmp is not None:
            self.qmp.close()
        self.proc = None
        self.collect_logs()

    def collect_logs(self) -> None:
        """supervisord's program logs from the guest's disk into ``workdir/guest-logs``."""
        raw, ext = self.workdir / "after.raw", self.workdir / "after-root.ext4"
        try:
            subprocess.run(["qemu-img", "convert", "-O", "raw", str(self.workdir / "overlay.qcow2"),
                            str(raw)], check=True, capture_output=True)
            table = json.loads(subprocess.run(["sfdisk", "-J", str(raw)], check=True, capture_output=True,
                                              text=True).stdout)["partitiontable"]["partitions"]
            data = table[DATA_PARTITION - 1]  # the logs live on the data partition
            subprocess.run(["dd", f"if={raw}", f"of={ext}", "bs=4M", f"skip={data['start'] * 512}",
                            f"count={data['size'] * 512}", "iflag=skip_bytes,count_bytes",
                            "conv=sparse", "status=none"], check=True)
            dest = self.workdir / "guest-logs"
            dest.mkdir(exist_ok=True)
            subprocess.run(["debugfs", "-R", f"rdump /log/supervisor {dest}", str(ext)],
                           check=True, capture_output=True)
        except (subprocess.CalledProcessError, OSError, KeyError, IndexError) as exc:
            print(f"firmware: could not copy the guest's logs out: {exc}")
        finally:
            raw.unlink(missing_ok=True)
            ext.unlink(missing_ok=True)
