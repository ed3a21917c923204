"""The firmware tests: the built SD-card image booted under QEMU (``./build.sh test --firmware``).

They run only when asked (HEARTH_FIRMWARE=1, which that command sets): a plain
``./build.sh test`` deselects them, because a build takes 10-18 min and a boot several
more on two cores. When asked and there is no image, they fail (never skip): the command
that was run promised a tested image.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from appliance import __version__, identity
from appliance.client.backup import BoxAddress
from appliance.transport.noise import Keypair

from .vm import (
    GUEST_BACKUP_PORT,
    GUEST_ELECTRUM_PORT,
    GUEST_TOWER_PORT,
    VM,
    VMError,
    make_stick,
    mtools,
)

if TYPE_CHECKING:
    from .secondcard import SecondCard
    from .updates import Bundles

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

#: The box's root secret on the restore stick: the tests know it, so they know the phrase.
KNOWN_SECRET = bytes(range(0x40, 0x60))

#: QEMU has no OLED and no GPIO: the display draws on luma's dummy device and writes its
#: frames where the 9p share is mounted; the button reads a FIFO. regtest: no peers here.
GUEST_CONFIG = """\
[hearth]
network = "regtest"

[display]
simulate = true
frames_dir = "/var/lib/hearth/frames"

[button]
simulate = true
"""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("HEARTH_FIRMWARE") == "1":
        # The second card's tests only collect what its thread did: last, so the shared
        # box's tests run meanwhile (secondcard.py).
        items.sort(key=lambda i: Path(str(i.path)).name == "test_second_card.py")
        return
    mine = [i for i in items if HERE in Path(str(i.path)).parents]
    if mine:
        config.hook.pytest_deselected(items=mine)
        items[:] = [i for i in items if i not in mine]


def image_path() -> Path:
    env = os.environ.get("HEARTH_IMAGE")
    path = Path(env) if env else REPO / "out" / f"hearth-{__version__}-arm64.img"
    if not path.exists():
        pytest.fail(f"no image at {path}: build it with ./build.sh (./build.sh test --firmware "
                    f"builds it when missing), or point HEARTH_IMAGE at one", pytrace=False)
    return path


def recovery_phrase(secret: bytes) -> str:
    """The phrase per CONTRACT.md; the usb branch provides identity.recovery_phrase."""
    derive = getattr(identity, "recovery_phrase", None)
    if derive is None:
        pytest.fail("appliance.identity.recovery_phrase is missing: the USB agent (usb branch) "
                    "is not in this tree yet, so there is no phrase and no USB backup", pytrace=False)
    return " ".join(derive(secret))


def restore_payload(secret: bytes) -> bytes:
    """The plaintext of a backup this box would write (the appliance's own payload code);
    the test encrypts it as age does (agecli.encrypt_light: a work factor the emulated
    guest accepts)."""
    from appliance import __version__
    from appliance.usb.archive import BackupContents, build_payload, metadata

    meta = metadata(secret, created="2026-01-01T00:00:00Z", version=__version__, network="regtest",
                    agent_source="none")
    return build_payload(BackupContents(secret, meta))


class Box:
    def __init__(self, vm: VM, phrase: str | None, phrase_error: str | None) -> None:
        self.vm, self.phrase, self.phrase_error = vm, phrase, phrase_error
        self.setup_link: str | None = None  # the OLED's QR, once a test has decoded it
        self.stick_pulled = False

    def pull_restore_stick(self) -> None:
        """First-boot restore from the stick that was in at power-on: the agent wipes
        hearth-restore.txt once the identity is restored; then the owner pulls the stick
        (the result page stays up while it is in) and pairing opens: the phrase is known.
        Once per boot of the card; later calls do nothing."""
        if self.phrase is None or not self.vm.usb_at_boot or self.stick_pulled:
            return
        stick = self.vm.usb_at_boot[0]
        deadline = time.monotonic() + 600
        while "hearth-restore.txt" in mtools("mdir", "-b", "-i", str(stick), "::/").stdout.lower():
            if time.monotonic() > deadline:
                pytest.fail("first-boot restore never consumed hearth-restore.txt on the stick")
            time.sleep(5)
        print(f"first-boot restore done {time.time() - self.vm.started:.0f} s after QEMU started")
        self.vm.unplug("bootusb0")
        self.stick_pulled = True
        # The agent restarts the services that started with the box's own identity right
        # after wiping the file, and logs its outcome once supervisorctl is done; RUNNING
        # is not yet listening (a Python service under TCG takes tens of seconds to
        # import): a test talking to them meanwhile got its connection reset.
        while "Restored box" not in self.vm.ssh(
                "grep -h 'Restored box' /var/log/supervisor/hearth-usb*.log", check=False):
            if time.monotonic() > deadline:
                pytest.fail("the USB agent never reported the restore's outcome")
            time.sleep(2)
        from .checks import wait_listening  # checks imports this module's REPO

        wait_listening(self.vm, (GUEST_ELECTRUM_PORT, GUEST_TOWER_PORT, GUEST_BACKUP_PORT),
                       max(60.0, deadline - time.monotonic()))


@pytest.fixture(scope="session")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    """One boot per run; every firmware test checks something on it."""
    from .agecli import encrypt_light

    image = image_path()
    work = tmp_path_factory.mktemp("firmware-vm")
    phrase: str | None = None
    phrase_error: str | None = None
    sticks: list[Path] = []
    try:
        phrase = recovery_phrase(KNOWN_SECRET)
    except pytest.fail.Exception as exc:
        phrase_error = str(exc)
    if phrase is not None:
        age_file = work / "backup.age"
        encrypt_light(restore_payload(KNOWN_SECRET), age_file, phrase)
        stick = work / "restore-stick.img"
        box_id = getattr(identity, "box_id", lambda s: "test")(KNOWN_SECRET)
        make_stick(stick, {"hearth-restore.txt": phrase.encode() + b"\n",
                           f"HEARTH/hearth-{box_id}-20260101T000000Z.age": age_file.read_bytes()},
                   label="RESTORE")
        sticks.append(stick)
    vm = VM(image=image, workdir=work, boot_config=GUEST_CONFIG, usb_at_boot=sticks)
    vm.start()
    print(f"\nfirmware: QEMU started, console {vm.console}")
    try:
        yield Box(vm, phrase, phrase_error)
    finally:
        vm.stop()
        elapsed = time.time() - vm.started
        print(f"\nfirmware: QEMU ran {elapsed:.0f} s; console log kept at {vm.console}")


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    """The update bundles (X+1, a broken X+2, three to be refused), made once per run."""
    from .updates import build_bundles

    return build_bundles(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="session")
def second_card(bundles: Bundles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecondCard]:
    """A second box (secondcard.py) whose steps run in a thread: started by a test that
    mostly waits, collected by test_second_card.py's tests."""
    from .secondcard import SECOND_CARD_TIMEOUT_S, SecondCard

    card = SecondCard(tmp_path_factory.mktemp("firmware-second-card"), bundles)
    yield card
    if card.thread is not None:
        card.done.wait(SECOND_CARD_TIMEOUT_S)  # never leave its QEMU behind


@pytest.fixture(scope="module")
def paired(box: Box, tmp_path_factory: pytest.TempPathFactory) -> tuple[BoxAddress, Keypair]:
    """A Lightning node's computer paired with the box (the backup agent's address, its key)."""
    from .backupagent import pair
    from .checks import wait_ready

    box.vm.wait_ssh(300)
    wait_ready(box.vm)
    box.pull_restore_stick()
    return pair(box.vm, tmp_path_factory.mktemp("backup-client"))


__all__ = ["KNOWN_SECRET", "Box", "VMError"]
