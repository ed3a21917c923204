"""The chaos soak: the whole box under its real supervisord, storms of faults, invariants after each.

``scripts/sim.py up`` runs bitcoind and every Hearth service under the real supervisord
and the real supervision listener; the chain and the services' data live on a small
tmpfs (the "SD card") so that the disk can really fill up. While a bitcoind wallet
transacts, a TEOS client adds appointments and a backup client appends records, storms
hit the box:

* ``kill``: kill -9 of one to three random programs (bitcoind and the listener included);
* ``reorg``: a reorg 1 to 6 blocks deep, with kills during it;
* ``disk``: the card filled to the last byte (writes must be refused, explicitly), a
  block mined on it (bitcoind stops for low disk), a kill, then the space freed;
* ``behind``: 1-3 blocks mined and seen by the tower and the indexer but not yet flushed
  by bitcoind, then bitcoind and the tower killed together (a power cut): bitcoind comes
  back *behind* its consumers, without those blocks.

After each storm, without any human help (no supervisorctl start): every program is
RUNNING, the indexer's Electrum answers equal bitcoind's truth for the wallet, the tower
is at bitcoind's tip and still has every appointment it acknowledged, its counters equal
what it stores, and every acknowledged backup record reads back.

Bounded: ``HEARTH_SOAK_KILLS`` kills (default 6) or ``HEARTH_SOAK_MINUTES`` (default 1.5)
of storms, whichever comes first; ``HEARTH_SOAK_SEED`` replays a run and
``HEARTH_SOAK_STORMS=behind,disk`` picks the kinds. The figures go to
stdout (run with ``-s``) and, with ``HEARTH_SOAK_REPORT=path``, to a JSON file.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from appliance.client.backup import GONE, BackupClient, BackupRefused, BoxAddress
from appliance.config import load_config
from appliance.control import ControlError, control_request
from appliance.identity import derive_secp256k1, load_or_create_hsm_secret
from appliance.pairing.store import Whitelist
from appliance.tower.crypto import encrypt_blob, get_appointment_message, locator_of, sign_message
from appliance.transport.noise import Keypair
from functional.framework.appliance import ElectrumClient, scripthash_of
from functional.framework.disk import SmallDisk, small_disk
from functional.framework.node import RPCError, TestNode
from functional.framework.truth import Truth
from functional.framework.util import wait_until

KILLS = int(os.environ.get("HEARTH_SOAK_KILLS", "6"))
MINUTES = float(os.environ.get("HEARTH_SOAK_MINUTES", "1.5"))
# When bitcoind's chainstate is flushed after a block the soak mines (Workload.flush):
# "random" (half the time: reorgs then land below the last flush, and a kill -9 after one
# damages Knots' block filter index, which the box must repair by itself), "1" always,
# "0" never (Knots on regtest then never flushes within a run).
FLUSH = os.environ.get("HEARTH_SOAK_FLUSH", "random")
# Start-up, the storms' time budget, and the last storm's checks.
pytestmark = [pytest.mark.node, pytest.mark.slow, pytest.mark.timeout(MINUTES * 60 + 900)]

REPO = Path(__file__).resolve().parents[2]
SIM = [sys.executable, str(REPO / "scripts" / "sim.py")]
SUPERVISORCTL = str(Path(sys.executable).parent / "supervisorctl")
PROGRAMS = ("bitcoind", "hearth-node", "hearth-tower", "hearth-indexer", "hearth-display",
            "hearth-button", "hearth-backup", "hearth-supervision")
STORMS = tuple(os.environ.get("HEARTH_SOAK_STORMS", "kill,kill,kill,reorg,disk,behind").split(","))
SID = "5a" * 32
RECOVERY_S = 180.0  # every invariant must hold again within this after a storm


@dataclass
class Ledger:
    """What the box acknowledged, and what each storm found."""

    appointments: list[str] = field(default_factory=list)  # locators (hex) with a receipt
    appointment_refusals: dict[str, int] = field(default_factory=dict)
    backup: dict[int, bytes] = field(default_factory=dict)  # version -> record
    backup_refusals: dict[str, int] = field(default_factory=dict)
    txs: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    storms: list[dict[str, Any]] = field(default_factory=list)
    behind: list[int] = field(default_factory=list)  # blocks bitcoind lost in "behind" storms
    flushes: int = 0
    reorg_power_cuts: int = 0  # reorgs followed by a kill -9 of bitcoind


class Box:
    """The sim, seen from outside: supervisorctl, bitcoind RPC, the services' sockets."""

    def __init__(self, d: Path, disk: SmallDisk, factor: float) -> None:
        self.d = d
        self.disk = disk
        self.factor = factor
        connect = json.loads((d / "connect.json").read_text())
        self.cfg = load_config(d / "hearth.toml")
        rpc_port = int(urllib.parse.urlsplit(connect["bitcoind"]["rpc_url"]).port or 0)
        self.node = TestNode(0, d / "bitcoin", Path(connect["bitcoind"]["bindir"]),
                             rpc_port=rpc_port, wallet="sim")
        self.electrum_port = int(connect["electrum"]["tcp_port"])
        self.backup_port = int(connect["backup"]["port"])
        self.box_key = derive_secp256k1(load_or_create_hsm_secret(self.cfg.hsm_secret_file),
                                        "noise-static").public
        url = urllib.parse.urlsplit(connect["tower"]["watchtower_url"])
        self.tower_port = int(connect["tower"]["ports"]["http"])
        self.tower_auth = base64.b64encode(f"{url.username}:{url.password}".encode()).decode()

    # --- supervisord -------------------------------------------------------------------
    def states(self) -> dict[str, tuple[str, int | None]]:
        out = subprocess.run([SUPERVISORCTL, "-c", str(self.d / "supervisord.conf"), "status"],
                             capture_output=True, text=True, timeout=30).stdout
        states: dict[str, tuple[str, int | None]] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                pid = int(parts[3].rstrip(",")) if len(parts) > 3 and parts[2] == "pid" else None
                states[parts[0]] = (parts[1], pid)
        return states

    def log_tail(self, program: str, lines: int = 3) -> str:
        try:
            text = (self.d / "log" / f"{program}.log").read_text(errors="replace")
        except OSError:
            return "-"
        return " | ".join(text.strip().splitlines()[-lines:])

    def kill9(self, program: str) -> bool:
        state, pid = self.states().get(program, ("?", None))
        if state != "RUNNING" or pid is None:
            return False
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def filter_index_repairs(self) -> int:
        """How often the listener repaired bitcoind's block filter index (its log)."""
        try:
            text = (self.d / "log" / "bitcoind-repair.log").read_text(errors="replace")
        except OSError:
            return 0
        return text.count("rewound to height")

    def all_running(self) -> bool:
        states = self.states()
        states.pop("bitcoind-repair", None)  # one-shot: runs only when bitcoind needs it
        return bool(states) and all(s == "RUNNING" for s, _ in states.values())

    # --- bitcoind --------------------------------------------------------------------------
    def rpc_ready(self) -> bool:
        try:
            self.node.getblockcount()
            return True
        except (OSError, RPCError, ValueError):
            self.node._close()
            return False

    def ensure_wallets(self) -> None:
        loaded = set(self.node.listwallets())
        for name in ("sim", "soak"):
            if name not in loaded:
                try:
                    self.node.loadwallet(name)
                except RPCError as exc:
                    if "already loaded" not in exc.message:
                        raise

    # --- services ------------------------------------------------------------------------------
    def control(self, service: str, cmd: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = control_request(self.cfg.control_endpoint(service), cmd,
                                                     timeout=5)
            return result
        except ControlError:
            return None

    def tower_post(self, path: str, body: dict[str, Any], auth: bool = False
                   ) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.tower_port, timeout=10)
        try:
            headers = {"Content-Type": "application/json"}
            if auth:
                headers["Authorization"] = f"Basic {self.tower_auth}"
            conn.request("POST", path, json.dumps(body), headers)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()


class Workload:
    """The wallet, the TEOS client and the backup client; each step tolerates a box that
    is restarting, and records only what was acknowledged."""

    def __init__(self, box: Box, ledger: Ledger, rng: random.Random) -> None:
        self.box = box
        self.ledger = ledger
        self.rng = rng
        self.user = PrivateKey()
        self.backup_key = Keypair.generate()
        # What the pairing gate writes when the owner pairs a client.
        Whitelist(box.cfg.paired_clients_file).add(
            self.backup_key.public, "soak")
        self.registered = False
        self.backup_started = False

    def step(self, *, mine: bool = True) -> None:
        for op in (self.transact, self.appointment, self.backup_write):
            try:
                op(mine=mine)
            except (*GONE, RPCError, ValueError, BackupRefused, ControlError):
                pass  # the box (or bitcoind) is down or refusing: only acks count

    def transact(self, *, mine: bool) -> None:
        node = self.box.node
        self.box.ensure_wallets()
        addr = node.rpc("getnewaddress", wallet="soak")
        node.rpc("sendtoaddress", addr, str(Decimal(self.rng.randint(1, 50)) / 100), wallet="sim")
        self.ledger.txs += 1
        if self.rng.random() < 0.4:  # spend from the watched wallet too
            bal = Decimal(node.rpc("getbalances", wallet="soak")["mine"]["trusted"])
            if bal > Decimal("0.2"):
                node.rpc("sendtoaddress", node.rpc("getnewaddress", wallet="sim"), "0.1",
                         wallet="soak")
                self.ledger.txs += 1
        if mine and self.rng.random() < 0.5:
            node.mine(1)
            self.flush()

    def flush(self) -> None:
        """Make bitcoind write its chainstate now (``gettxoutsetinfo`` flushes first), as
        ``HEARTH_SOAK_FLUSH`` says.

        Knots 29.4 on regtest never flushes by itself within a run; after a reorg below
        its last flushed tip, a kill -9 leaves its block filter index out of step and
        bitcoind stops at every start ("Cannot read last block filter header; index may
        be corrupted") until the supervision listener repairs the index
        (docs/reliability.md). Flushing at random makes reorgs below a flush common.
        """
        if FLUSH == "1" or (FLUSH == "random" and self.rng.random() < 0.5):
            self.box.node.gettxoutsetinfo("none")
            self.ledger.flushes += 1

    def appointment(self, *, mine: bool) -> None:
        user_id = self.user.public_key.format().hex()
        if not self.registered:
            status, _ = self.box.tower_post("/register", {"user_id": user_id}, auth=True)
            self.registered = status == 200
            if not self.registered:
                return
        txid = secrets.token_bytes(32)
        locator = locator_of(txid)
        blob = encrypt_blob(secrets.token_bytes(200), txid)
        sig = sign_message(locator + blob + (144).to_bytes(4, "big"), self.user)
        status, reply = self.box.tower_post("/add_appointment", {
            "appointment": {"locator": locator.hex(), "encrypted_blob": blob.hex(),
                            "to_self_delay": 144}, "signature": sig})
        if status == 200 and reply.get("signature"):
            self.ledger.appointments.append(locator.hex())
        else:
            key = f"{status}/{reply.get('error_code')}"
            self.ledger.appointment_refusals[key] = self.ledger.appointment_refusals.get(key, 0) + 1

    def backup_write(self, *, mine: bool) -> None:
        async def go() -> None:
            c = await BackupClient.connect(BoxAddress("127.0.0.1", self.box.backup_port,
                                                      self.box.box_key), self.backup_key,
                                           timeout=10)
            try:
                if not self.backup_started:
                    await c.request({"op": "snapshot", "stream": SID, "kind": "cln",
                                     "version": 0, "takeover": True}, b"snapshot")
                    self.backup_started = True
                version = max(self.ledger.backup, default=0) + 1
                record = secrets.token_bytes(self.rng.randint(100, 3000))
                try:
                    await c.request({"op": "append", "stream": SID, "version": version}, record)
                except BackupRefused as exc:
                    refusals = self.ledger.backup_refusals
                    refusals[exc.code] = refusals.get(exc.code, 0) + 1
                    return
                self.ledger.backup[version] = record
            finally:
                c.close()
        asyncio.run(asyncio.wait_for(go(), 30))


class Checker:
    """The invariants; each returns a list of failures (empty: holds)."""

    def __init__(self, box: Box, ledger: Ledger, work: Workload, truth: Truth) -> None:
        self.box = box
        self.ledger = ledger
        self.work = work
        self.truth = truth
        self.tower_failed = False

    def wait(self, what: str, ok: Callable[[], bool], timeout: float, failures: list[str]) -> bool:
        try:
            wait_until(ok, timeout=timeout, factor=self.box.factor, interval=0.5)
            return True
        except Exception:
            failures.append(what)
            return False

    def check(self) -> tuple[list[str], float]:
        failures: list[str] = []
        started = time.monotonic()
        box = self.box
        self.wait("every program RUNNING", box.all_running, RECOVERY_S, failures)
        # A tower that already failed to follow is reported again without a full wait.
        patience = 60.0 if not self.tower_failed else 10.0
        recovered = time.monotonic() - started
        if not self.wait("bitcoind answers", box.rpc_ready, 60, failures):
            return failures, recovered
        box.ensure_wallets()
        box.node.mine(1)  # a new tip everything must follow
        self.work.flush()
        tip = int(box.node.getblockcount())
        best = box.node.getbestblockhash()

        def indexer_synced() -> bool:
            st = box.control("indexer", "status")
            return bool(st and st["height"] == tip and st["tip"] == best)

        if self.wait(f"indexer at bitcoind's tip {tip}", indexer_synced, 60, failures):
            failures += self.electrum_equals_truth()

        def tower_synced() -> bool:
            st = box.control("tower", "status")
            return bool(st and st["live"] and st["height"] == tip)

        if not self.wait(f"tower live at bitcoind's tip {tip}", tower_synced, patience, failures):
            self.tower_failed = True
            st = box.control("tower", "status") or {}
            failures[-1] += (f" (tower: live {st.get('live')}, height {st.get('height')}; "
                             f"log: {box.log_tail('hearth-tower')})")
        failures += self.tower_kept_everything()
        failures += self.backup_kept_everything()
        return failures, recovered

    def electrum_equals_truth(self) -> list[str]:
        view = self.truth.electrum_view()
        # Every script with history, and a sample of the unused ones (must be empty).
        used = [s for s, want in view.items() if want["history"]]
        unused = [s for s, want in view.items() if not want["history"]]
        picked = used + random.Random(len(used)).sample(unused, min(20, len(unused)))
        failures = []
        client = ElectrumClient(self.box.electrum_port)
        try:
            client.call("server.version", "hearth-soak", "1.4")
            for script in picked:
                want = view[script]
                sh = scripthash_of(script)
                history = client.call("blockchain.scripthash.get_history", sh)
                balance = client.call("blockchain.scripthash.get_balance", sh)
                if history != want["history"] or balance != {
                        "confirmed": want["confirmed"], "unconfirmed": want["unconfirmed"]}:
                    failures.append(f"electrum differs from bitcoind for script {script[:16]}")
                    break
        finally:
            client.close()
        return failures

    def tower_kept_everything(self) -> list[str]:
        audit = self.box.control("tower", "audit")
        if audit is None:
            return ["tower audit unanswered"]
        failures = []
        for name, count in audit["stored"].items():
            if audit["counters"].get(name, 0) != count:
                failures.append(f"tower counter {name} {audit['counters'].get(name)} != "
                                f"{count} stored")
        lost = 0
        for locator in self.ledger.appointments:
            sig = sign_message(get_appointment_message(bytes.fromhex(locator)), self.work.user)
            status, reply = self.box.tower_post("/get_appointment",
                                                {"locator": locator, "signature": sig})
            if status != 200 or reply.get("status") != "being_watched":
                lost += 1
        if lost:
            failures.append(f"tower lost {lost} of {len(self.ledger.appointments)} "
                            "acknowledged appointments")
        return failures

    def backup_kept_everything(self) -> list[str]:
        if not self.ledger.backup:
            return []

        async def read() -> dict[int, bytes]:
            c = await BackupClient.connect(BoxAddress("127.0.0.1", self.box.backup_port,
                                                      self.box.box_key), self.work.backup_key)
            try:
                return dict((await c.read(SID)).records)
            finally:
                c.close()
        deadline = time.monotonic() + 60 * self.box.factor
        while True:  # RUNNING is a few seconds before the listener is up
            try:
                stored = asyncio.run(asyncio.wait_for(read(), 60))
                break
            except (*GONE, BackupRefused) as exc:
                if time.monotonic() > deadline:
                    return [f"backup unreadable: {exc} "
                            f"(log: {self.box.log_tail('hearth-backup')})"]
                time.sleep(1)
        lost = [v for v, rec in self.ledger.backup.items() if stored.get(v) != rec]
        return [f"backup lost {len(lost)} of {len(self.ledger.backup)} acknowledged records"
                ] if lost else []


@pytest.fixture
def sim(tmp_path: Path, bitcoind_bindir: Path, timeout_factor: float) -> Iterator[Box]:
    d = Path(f"/tmp/hsoak-{os.getpid()}")  # supervisord and ipc socket paths stay short
    d.mkdir()
    try:
        with small_disk(d / "card", 1024) as disk:
            for sub in ("bitcoin", "data"):
                (disk.path / sub).mkdir()
                (d / sub).symlink_to(disk.path / sub)
            try:
                up = subprocess.run([*SIM, "up", "--dir", str(d), "--detach"],
                                    capture_output=True, text=True, timeout=300)
                assert up.returncode == 0, up.stderr[-3000:]
                # Short retry delays: a storm must heal within the test's patience.
                with open(d / "hearth.toml", "a") as fh:
                    fh.write("\n[supervision]\nretry_base_s = 1.0\nretry_max_s = 5.0\n"
                             "flood_restarts = 5\nflood_window_s = 60.0\n")
                subprocess.run([SUPERVISORCTL, "-c", str(d / "supervisord.conf"), "restart",
                                "hearth-supervision"], capture_output=True, timeout=60)
                box = Box(d, disk, timeout_factor)
                yield box
                box.node._close()  # its keep-alive RPC connection
            finally:
                disk.release()
                subprocess.run([*SIM, "down", "--dir", str(d)], capture_output=True, timeout=180)
                # The programs' logs outlive the run (pytest keeps tmp_path) for a post-mortem.
                subprocess.run(["cp", "-r", str(d / "log"), str(tmp_path / "log")], check=False)
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=False)


def test_chaos_soak(sim: Box) -> None:
    box = sim
    kills_wanted, minutes = KILLS, MINUTES
    seed = int(os.environ.get("HEARTH_SOAK_SEED", str(secrets.randbelow(1 << 30))))
    rng = random.Random(seed)
    ledger = Ledger()
    node = box.node
    node.createwallet("soak", False, False, "", False, True, True)  # load_on_startup
    descs = [d["desc"] for d in node.rpc("listdescriptors", wallet="soak")["descriptors"]
             if d["desc"].startswith("wpkh(")]
    subprocess.run([str(Path(sys.executable).parent / "appliance"), "wallet", "add", *descs,
                    "--config", str(box.d / "hearth.toml")], check=True, capture_output=True,
                   timeout=60)
    scripts = set()
    for desc in descs:
        for addr in node.deriveaddresses(desc, [0, 999]):  # far past what a run uses
            scripts.add(node.validateaddress(addr)["scriptPubKey"])
    work = Workload(box, ledger, rng)
    checker = Checker(box, ledger, work, Truth(node, scripts))
    for _ in range(3):
        work.step()
    failures, _ = checker.check()
    assert failures == [], f"not healthy before any storm: {failures}"

    deadline = time.monotonic() + minutes * 60
    kills = 0
    started = time.monotonic()
    while kills < kills_wanted and time.monotonic() < deadline:
        kind = rng.choice(STORMS)
        t0 = time.monotonic()
        n = storm(kind, box, work, ledger, rng)
        kills += n
        failures, recovered = checker.check()
        ledger.storms.append({"kind": kind, "kills": n, "failures": failures,
                              "recovered_s": round(recovered, 1),
                              "storm_s": round(time.monotonic() - t0, 1)})
        print(f"soak storm {len(ledger.storms)} {kind}: {n} kills, all RUNNING after "
              f"{recovered:.1f} s, {'OK' if not failures else failures}", flush=True)

    failed = [s for s in ledger.storms if s["failures"]]
    report = {
        "seed": seed, "kills": kills, "kills_by_program": ledger.kills,
        "storms": len(ledger.storms),
        "storms_by_kind": {k: sum(s["kind"] == k for s in ledger.storms) for k in set(STORMS)},
        "failed_storms": [(i + 1, s["kind"], s["failures"]) for i, s in enumerate(ledger.storms)
                          if s["failures"]],
        "failures_by_invariant": _by_invariant(ledger.storms),
        "max_recovery_s": max((s["recovered_s"] for s in ledger.storms), default=0),
        "median_recovery_s": sorted(s["recovered_s"] for s in ledger.storms)[
            len(ledger.storms) // 2] if ledger.storms else 0,
        "appointments_acked": len(ledger.appointments),
        "appointment_refusals": ledger.appointment_refusals,
        "backup_records_acked": len(ledger.backup), "backup_refusals": ledger.backup_refusals,
        "behind_blocks": ledger.behind, "wallet_txs": ledger.txs,
        "flush": FLUSH, "flushes": ledger.flushes, "reorg_power_cuts": ledger.reorg_power_cuts,
        "filter_index_repairs": box.filter_index_repairs(),
        "minutes": round((time.monotonic() - started) / 60, 1),
        "height": int(node.getblockcount()),
    }
    print("soak report: " + json.dumps(report), flush=True)
    if os.environ.get("HEARTH_SOAK_REPORT"):
        Path(os.environ["HEARTH_SOAK_REPORT"]).write_text(json.dumps(report, indent=2) + "\n")
    assert kills >= min(kills_wanted, 1)
    assert not failed, f"storms that broke an invariant (seed {seed}): {report['failed_storms']}"


_INVARIANTS = ("every program RUNNING", "bitcoind answers", "indexer at", "electrum differs",
               "tower live", "tower audit", "tower counter", "tower lost", "backup")


def _by_invariant(storms: list[dict[str, Any]]) -> dict[str, int]:
    """How many storms broke each invariant."""
    out: dict[str, int] = {}
    for s in storms:
        for name in {i for f in s["failures"] for i in _INVARIANTS if f.startswith(i)}:
            out[name] = out.get(name, 0) + 1
    return out


def storm(kind: str, box: Box, work: Workload, ledger: Ledger, rng: random.Random) -> int:
    """One storm; returns how many programs it killed."""
    kills = 0

    def kill(program: str) -> None:
        nonlocal kills
        if box.kill9(program):
            kills += 1
            ledger.kills[program] = ledger.kills.get(program, 0) + 1

    if kind == "kill":
        for program in rng.sample(PROGRAMS, rng.randint(1, 4)):
            kill(program)
            work.step()
    elif kind == "reorg":
        work.step()
        if box.rpc_ready():
            depth = rng.randint(1, 6)
            # Half the reorgs end in a power cut, after a flush at the tip they replace:
            # Knots' block filter index is then damaged, and the box must repair it.
            power_cut = FLUSH == "random" and rng.random() < 0.5
            if power_cut:
                box.node.gettxoutsetinfo("none")
                ledger.flushes += 1
            height = int(box.node.getblockcount())
            box.node.invalidateblock(box.node.getblockhash(height - depth + 1))
            kill(rng.choice(PROGRAMS[1:]))
            box.node.mine(depth + 1, box.node.new_address("bech32m"))
            if power_cut:
                ledger.reorg_power_cuts += 1
                kill("bitcoind")
                wait_until(box.rpc_ready, timeout=RECOVERY_S, factor=box.factor, interval=0.5)
            else:
                work.flush()
        work.step()
    elif kind == "disk":
        work.step(mine=False)
        box.disk.fill()
        try:
            for _ in range(5):
                work.step()  # refused explicitly, never acknowledged and lost
            kill(rng.choice(PROGRAMS))
            time.sleep(2)
        finally:
            box.disk.release()
    elif kind == "behind":
        # A power cut: blocks bitcoind has not flushed yet are gone when it restarts, so it
        # comes back *behind* the tower and the indexer that saw them (issue 12, item 2).
        tip = -1
        if box.rpc_ready():
            box.node.mine(rng.randint(1, 3))  # not flushed: these die with bitcoind
            tip = int(box.node.getblockcount())
            seen = tip  # the consumers saw them (or are stuck: the checks will say)
            for _ in range(60):
                if (box.control("tower", "status") or {}).get("height") == seen:
                    break
                time.sleep(0.5)
        kill("bitcoind")
        kill("hearth-tower")
        wait_until(box.rpc_ready, timeout=120, factor=box.factor, interval=0.5)
        if tip >= 0:
            ledger.behind.append(tip - int(box.node.getblockcount()))
        work.step()
    return kills
