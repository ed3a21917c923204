"""The one declared configuration spec, read from a TOML file and HEARTH_* variables.

Every option is declared once, as a typed dataclass field with a ``doc``. From that
declaration come the TOML keys (``[section] key``), the environment overrides
(``HEARTH_<SECTION>_<KEY>``) and the generated reference in ``docs/config.md``.
Precedence: environment > file > default. Secrets never appear here: options only
name the *files* that hold them (bitcoind's cookie, ``hsm_secret``).

A bad file stops the service at start with a :class:`ConfigError` that names the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "NETWORKS",
    "BackupSection",
    "ButtonSection",
    "Config",
    "DisplaySection",
    "ConfigError",
    "ElectrumSection",
    "HearthSection",
    "IndexerSection",
    "LogSection",
    "NodeSection",
    "TorSection",
    "TowerSection",
    "UpdateSection",
    "TransportSection",
    "dump_toml",
    "load_config",
    "render_reference",
    "toml_value",
]

#: network name -> (bitcoind chain name, default RPC port)
NETWORKS: dict[str, tuple[str, int]] = {
    "mainnet": ("main", 8332),
    "testnet": ("test", 18332),
    "testnet4": ("testnet4", 48332),
    "signet": ("signet", 38332),
    "regtest": ("regtest", 18443),
}



def chain_dir(bitcoin_dir: Path, chain: str) -> Path:
    """Where bitcoind keeps ``chain``'s data under its ``-datadir`` (mainnet: the datadir)."""
    sub = {"main": "", "test": "testnet3"}.get(chain, chain)
    return bitcoin_dir / sub if sub else bitcoin_dir


LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """The configuration is unusable; the message names the offending key."""


def _opt(default: Any, doc: str, **kw: Any) -> Any:
    return field(default=default, metadata={"doc": doc, **kw})


@dataclass(frozen=True)
class HearthSection:
    network: str = _opt("mainnet", "Bitcoin network: " + ", ".join(NETWORKS), choices=tuple(NETWORKS))
    data_dir: Path = _opt(Path("/var/lib/hearth"), "Where services keep their state (one subdirectory each).")
    run_dir: Path = _opt(Path("/run/hearth"), "Where the local ZMQ ipc sockets between services live.")


@dataclass(frozen=True)
class NodeSection:
    rpc_url: str = _opt("", "bitcoind JSON-RPC URL; empty means http://127.0.0.1:<network's port>.")
    cookie_file: str = _opt("", "bitcoind's .cookie file; empty means <bitcoin_dir>/<chain>/.cookie.")
    bitcoin_dir: Path = _opt(Path("/var/lib/bitcoind"), "bitcoind's -datadir.")
    rpc_timeout: float = _opt(30.0, "Seconds before one RPC call is abandoned.", minimum=0.1)
    zmq_rawblock: str = _opt("ipc:///run/bitcoind/rawblock", "bitcoind -zmqpubrawblock endpoint.")
    zmq_rawtx: str = _opt("ipc:///run/bitcoind/rawtx", "bitcoind -zmqpubrawtx endpoint.")
    zmq_hashblock: str = _opt("ipc:///run/bitcoind/hashblock", "bitcoind -zmqpubhashblock endpoint.")
    zmq_sequence: str = _opt("ipc:///run/bitcoind/sequence", "bitcoind -zmqpubsequence endpoint.")
    prune_mib: int = _opt(550, "bitcoind -prune target in MiB (0 = no pruning, else >= 550).", minimum=0)
    dbcache_mib: int = _opt(300, "bitcoind -dbcache in MiB (sized for a 4 GB Pi).", minimum=4)
    auto_size: bool = _opt(False, "Size prune from free disk and dbcache from RAM when writing "
                           "bitcoin.conf (the image turns this on).")
    conf_file: str = _opt("", "The bitcoin.conf Hearth wrote (e.g. /etc/bitcoin/bitcoin.conf). "
                          "If it was written for the initial sync, the node service lowers its "
                          "dbcache when the sync ends and restarts bitcoind through supervisord.")
    tor: str = _opt("off", "bitcoind's P2P over Tor (needs [tor] enabled and socks_port): off "
                    "(clearnet, fastest first sync), also (onion peers through Tor, the others "
                    "direct), onion-only (every peer through Tor: hides the box's IP from peers "
                    "and its transactions' origin, first sync several times slower). "
                    "See docs/operator.md.", choices=("off", "also", "onion-only"))


@dataclass(frozen=True)
class IndexerSection:
    gap_limit: int = _opt(20, "Unused receive scripts kept watched past the last used one.", minimum=1)
    change_gap_limit: int = _opt(20, "Unused change scripts kept watched past the last used one.",
                                 minimum=1)
    db_cache_mib: int = _opt(16, "LevelDB block cache of the index, MiB.", minimum=1)


@dataclass(frozen=True)
class ElectrumSection:
    bind: str = _opt("0.0.0.0", "Address the Electrum listeners bind (0.0.0.0 = the LAN).")
    tcp_port: int = _opt(50001, "Plain TCP Electrum port; 0 = off.", minimum=0)
    tls_port: int = _opt(50002, "TLS Electrum port (self-signed certificate).", minimum=1)
    tls: str = _opt("lan", "The TLS listener for stock phone wallets: lan (on) or off.",
                    choices=("lan", "off"))
    hostname: str = _opt("hearth.local", "Name in the TLS certificate and server.features.")
    max_sessions: int = _opt(100, "Concurrent unauthenticated (TCP/TLS) Electrum sessions.",
                             minimum=1)
    paired_sessions: int = _opt(32, "Sessions kept for paired (Noise) clients; "
                                "unauthenticated clients cannot use them.", minimum=1)
    sessions_per_address: int = _opt(16, "Unauthenticated sessions from one IP address.",
                                     minimum=1)
    inflight_per_address_kib: int = _opt(4096, "Bytes of unanswered requests one IP address "
                                         "may have in flight (unauthenticated), KiB.",
                                         minimum=1024)
    inflight_total_kib: int = _opt(32768, "The same for all unauthenticated clients "
                                   "together, KiB.", minimum=1024)
    version_timeout_s: float = _opt(10.0, "Seconds a new connection has to send "
                                    "server.version before it is closed.", minimum=0.5)
    banner: str = _opt("", "server.banner text; empty = a default greeting.")


@dataclass(frozen=True)
class TransportSection:
    noise_port: int = _opt(50003, "BOLT-08 (Noise) port for paired clients; 0 = off.", minimum=0)
    bind: str = _opt("0.0.0.0", "Address the Noise listener binds.")
    advertise_host: str = _opt("", "IPv4 address put in the pairing QR; empty = detect.")
    pairing_window_s: float = _opt(300.0, "How long a short button press opens pairing.",
                                   minimum=10.0)


@dataclass(frozen=True)
class SetupSection:
    port: int = _opt(8443, "HTTPS port of the setup page (phones pair by scanning the OLED); "
                     "0 = off.", minimum=0)
    bind: str = _opt("0.0.0.0", "Address the setup page binds (0.0.0.0 = the LAN).")
    max_failed_redemptions: int = _opt(10, "Wrong pairing links accepted per minute before "
                                       "the setup page refuses every redemption for a minute.",
                                       minimum=1)


@dataclass(frozen=True)
class DisplaySection:
    driver: str = _opt("ssd1306", "OLED controller: ssd1306, sh1106, ssd1309, ssd1327.",
                       choices=("ssd1306", "sh1106", "ssd1309", "ssd1327"))
    height: int = _opt(0, "Panel height in pixels (64 or 128); 0 = the driver's usual size.",
                       minimum=0)
    i2c_port: int = _opt(1, "I2C bus number (/dev/i2c-N).", minimum=0)
    i2c_address: int = _opt(60, "I2C address, decimal (60 = 0x3C, 61 = 0x3D).", minimum=0)
    rotate: int = _opt(0, "Rotation in quarter turns (0-3).", choices=(0, 1, 2, 3))
    simulate: bool = _opt(False, "Draw on luma's dummy device instead of I2C (sim, tests).")
    frames_dir: str = _opt("", "Save each frame as PNG here (sim only: frames can show secrets).")
    dim_after_s: float = _opt(60.0, "Dim the panel after this long without activity.", minimum=1.0)
    refresh_s: float = _opt(1.0, "Seconds between redraws.", minimum=0.05)
    stale_after_s: float = _opt(15.0, "A service silent this long is shown as stale.", minimum=1.0)
    hwmon_dir: str = _opt("/sys/class/hwmon", "Where the Pi's rpi_volt under-voltage alarm is "
                          "looked for (Linux hwmon).")


@dataclass(frozen=True)
class ButtonSection:
    gpio_pin: int = _opt(17, "BCM pin of the button (17 = physical pin 11).", minimum=0)
    pull_up: bool = _opt(True, "Button wired to ground with the internal pull-up.")
    long_press_s: float = _opt(5.0, "Hold this long to reset pairing.", minimum=1.0)
    simulate: bool = _opt(False, "Read presses from a FIFO instead of GPIO (sim, tests).")
    sim_path: str = _opt("", "The FIFO for simulated presses; empty = <run_dir>/button.fifo.")


@dataclass(frozen=True)
class TowerSection:
    bind: str = _opt("0.0.0.0", "Address the tower's HTTP listeners bind (0.0.0.0 = the LAN).")
    http_port: int = _opt(9814, "Plain HTTP tower port (Electrum's watchtower_url, TEOS API); only "
                          "loopback and private LAN addresses are served; 0 = off.", minimum=0)
    https_port: int = _opt(9815, "HTTPS tower port (the box's self-signed certificate); 0 = off.",
                           minimum=0)
    noise_port: int = _opt(9816, "BOLT-08 (Noise) port carrying the tower's HTTP for paired "
                           "clients; 0 = off.", minimum=0)
    user: str = _opt("hearth", "HTTP Basic user for Electrum's watchtower_url.")
    password: str = _opt("", "HTTP Basic password; empty = made at first start and kept in "
                         "<data_dir>/tower/http-password (0600): `appliance tower url` shows it.")
    slots: int = _opt(10000, "Appointment slots a TEOS user gets per registration.", minimum=1)
    subscription_blocks: int = _opt(4320, "Blocks a TEOS registration lasts (about 30 days).",
                                    minimum=1)
    max_blob_bytes: int = _opt(2048, "Largest encrypted appointment or sweep transaction accepted.",
                               minimum=256)
    max_channels: int = _opt(10000, "Channels Electrum wallets may register (get_ctn); more "
                             "are refused, so a runaway client cannot fill the card.", minimum=1)
    max_sweeps: int = _opt(1_000_000, "Electrum sweep transactions kept (about 330 bytes each on "
                           "disk); more are refused until closed channels are dropped.", minimum=1)
    max_users: int = _opt(1000, "TEOS users (registered keys) kept; new ones beyond are refused.",
                          minimum=1)
    max_appointments: int = _opt(1_000_000, "TEOS appointments kept across all users (about 330 "
                                 "bytes each on disk); more are refused.", minimum=1)
    finality_depth: int = _opt(100, "Confirmations after which a response is final (no more "
                               "reorg watching) and a closed channel's sweeps are dropped.", minimum=1)
    db_cache_mib: int = _opt(8, "LevelDB block cache of the tower's store, MiB.", minimum=1)


@dataclass(frozen=True)
class BackupSection:
    port: int = _opt(50004, "BOLT-08 (Noise) port of the channel-state backup agent; 0 = off.",
                     minimum=0)
    bind: str = _opt("0.0.0.0", "Address the backup agent binds.")
    quota_mib: int = _opt(256, "Backup space each paired client may use, MiB.", minimum=1)
    file_versions: int = _opt(3, "Versions kept of each pushed file (backup push).", minimum=1)
    compact_min_kib: int = _opt(1024, "Ask a client for a fresh snapshot once its log is larger "
                                "than both its snapshot and this, KiB.", minimum=1)


@dataclass(frozen=True)
class TorSection:
    enabled: bool = _opt(True, "Run tor with v3 onion services for the Electrum TCP/TLS ports, "
                         "the Noise port and the setup page (the box away from home, no port "
                         "forwarding); false = LAN only.")
    socks_port: int = _opt(9050, "tor's SOCKS port on 127.0.0.1 (bitcoind's P2P when node.tor "
                           "is not off); 0 = none.", minimum=0)
    binary: str = _opt("tor", "The tor program (Debian's tor).")
    include: str = _opt("", "A file of extra torrc lines (%include), e.g. bridges or a "
                        "private test network's DirAuthority lines; empty = none.")


@dataclass(frozen=True)
class LogSection:
    level: str = _opt("info", "Log level: " + ", ".join(LOG_LEVELS), choices=LOG_LEVELS)


@dataclass(frozen=True)
class UsbSection:
    keep: int = _opt(5, "Backups of this box kept on a stick (older ones are deleted; nothing else is).",
                     minimum=1)
    min_size_mib: int = _opt(8, "Sticks (or partitions) smaller than this are refused.", minimum=1)
    mount_dir: str = _opt("/run/hearth-usb", "Private (0700) directory where sticks are mounted.")
    export_timeout_s: float = _opt(30.0, "Seconds to wait for the backup service's export.", minimum=0.5)
    settle_s: float = _opt(1.0, "Wait after a stick appears before reading it (partitions show up).",
                           minimum=0.0)
    phrase_gate: bool = _opt(True, "Show the recovery phrase at first boot and open pairing only "
                             "after the owner acknowledged it with the button.")
    restart_after_restore: str = _opt(
        "supervisorctl restart hearth-indexer hearth-backup hearth-tower hearth-tor",
        "Command run after a first-boot restore so services load the restored identity; empty = none.")


@dataclass(frozen=True)
class UpdateSection:
    keyring: str = _opt("/etc/rauc/keyring.pem", "Certificate an update bundle must be signed with "
                        "(given to rauc info as --keyring).")
    compatible: str = _opt("hearth-arm64", "The only bundle 'compatible' this box installs (its "
                           "system.conf's): a bundle for another architecture is refused.")
    rauc: str = _opt("rauc", "The rauc program (Debian's).")
    prompt_timeout_s: float = _opt(60.0, "A stick's update question goes away after this long "
                                   "without a press (nothing is installed).", minimum=1.0)


@dataclass(frozen=True)
class SupervisionSection:
    flood_restarts: int = _opt(5, "A program dying more often than this within flood_window_s is "
                               "paused (stopped, then started again after retry_base_s...).",
                               minimum=1)
    flood_window_s: float = _opt(300.0, "The flood-control window; up this long also counts as "
                                 "recovered (the retry delay starts over).", minimum=1.0)
    retry_base_s: float = _opt(10.0, "First delay before a FATAL or paused program is started "
                               "again; it doubles each time ...", minimum=0.1)
    retry_max_s: float = _opt(300.0, "... up to this, and retries go on at this pace for ever.",
                              minimum=0.1)


@dataclass(frozen=True)
class Config:
    hearth: HearthSection = field(default_factory=HearthSection)
    node: NodeSection = field(default_factory=NodeSection)
    indexer: IndexerSection = field(default_factory=IndexerSection)
    electrum: ElectrumSection = field(default_factory=ElectrumSection)
    transport: TransportSection = field(default_factory=TransportSection)
    setup: SetupSection = field(default_factory=SetupSection)
    display: DisplaySection = field(default_factory=DisplaySection)
    button: ButtonSection = field(default_factory=ButtonSection)
    tower: TowerSection = field(default_factory=TowerSection)
    backup: BackupSection = field(default_factory=BackupSection)
    tor: TorSection = field(default_factory=TorSection)
    log: LogSection = field(default_factory=LogSection)
    usb: UsbSection = field(default_factory=UsbSection)
    update: UpdateSection = field(default_factory=UpdateSection)
    supervision: SupervisionSection = field(default_factory=SupervisionSection)
    path: Path | None = None

    @property
    def chain(self) -> str:
        """bitcoind's name for the network (``main``, ``regtest`` ...)."""
        return NETWORKS[self.hearth.network][0]

    @property
    def rpc_url(self) -> str:
        return self.node.rpc_url or f"http://127.0.0.1:{NETWORKS[self.hearth.network][1]}"

    @property
    def cookie_file(self) -> Path:
        if self.node.cookie_file:
            return Path(self.node.cookie_file)
        return chain_dir(self.node.bitcoin_dir, self.chain) / ".cookie"

    @property
    def network_is_main(self) -> bool:
        return self.hearth.network == "mainnet"

    @property
    def hsm_secret_file(self) -> Path:
        """The box's root secret (see docs/identity.md), shared read-only by services."""
        return self.hearth.data_dir / "hsm_secret"

    # The one home of every file name in the data and run directories.

    @property
    def paired_clients_file(self) -> Path:
        """The pairing whitelist: written by the pairing gate, read by every listener."""
        return self.service_dir("indexer") / "paired-clients.json"

    @property
    def electrum_tls_files(self) -> tuple[Path, Path]:
        """The Electrum listener's certificate and key (made by the indexer or firstboot)."""
        d = self.service_dir("indexer")
        return d / "electrum-cert.pem", d / "electrum-key.pem"

    @property
    def tower_tls_files(self) -> tuple[Path, Path]:
        d = self.service_dir("tower")
        return d / "tower-cert.pem", d / "tower-key.pem"

    @property
    def setup_tls_files(self) -> tuple[Path, Path]:
        """The setup page's own certificate, when the Electrum TLS listener is off."""
        d = self.service_dir("setup")
        return d / "cert.pem", d / "key.pem"

    @property
    def backup_export_file(self) -> Path:
        return self.service_dir("backup") / "export.bin"

    @property
    def backup_import_file(self) -> Path:
        """A restored box's agent export, for the backup service to take in."""
        return self.service_dir("backup") / "import.bin"

    @property
    def phrase_ack_file(self) -> Path:
        return self.service_dir("usb") / "phrase-acknowledged"

    @property
    def tower_password_file(self) -> Path:
        return self.service_dir("tower") / "http-password"

    @property
    def tower_http_socket(self) -> Path:
        return self.hearth.run_dir / "tower-http.sock"

    @property
    def onion_service_dir(self) -> Path:
        """tor's HiddenServiceDir: the key derived from hsm_secret and ``hostname``."""
        return self.service_dir("tor") / "onion"

    @property
    def torrc_file(self) -> Path:
        return self.service_dir("tor") / "torrc"

    @property
    def button_fifo(self) -> Path:
        """Where simulated presses arrive (``[button] sim_path`` overrides it)."""
        return Path(self.button.sim_path) if self.button.sim_path else \
            self.hearth.run_dir / "button.fifo"

    @property
    def supervision_paused_file(self) -> Path:
        return self.hearth.run_dir / "supervision-paused.json"

    def control_endpoint(self, service: str) -> str:
        """The ZMQ REQ/REP socket where a running service takes commands."""
        return f"ipc://{self.hearth.run_dir / (service + '.ctl')}"

    def service_dir(self, service: str) -> Path:
        """The state directory one service owns exclusively."""
        return self.hearth.data_dir / service


def _sections() -> dict[str, type[Any]]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config) if f.name != "path"}


def _coerce(key: str, typ: Any, value: Any, meta: Mapping[str, Any], from_env: bool) -> Any:
    origin = typing.get_origin(typ)
    if origin in (types.UnionType, typing.Union):
        typ = next(t for t in typing.get_args(typ) if t is not type(None))
    try:
        if typ is bool:
            if from_env and isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    value = True
                elif value.lower() in ("0", "false", "no", "off"):
                    value = False
            if not isinstance(value, bool):
                raise TypeError
            out: Any = value
        elif typ is int:
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise TypeError
            if isinstance(value, str) and not from_env:
                raise TypeError
            out = int(value)
        elif typ is float:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise TypeError
            if isinstance(value, str) and not from_env:
                raise TypeError
            out = float(value)
        elif typ is Path:
            if not isinstance(value, str | os.PathLike):
                raise TypeError
            out = Path(value)
        elif typ is str:
            if not isinstance(value, str):
                raise TypeError
            out = value
        else:  # pragma: no cover - a spec error, not a user error
            raise AssertionError(f"unsupported option type {typ!r} for {key}")
    except (TypeError, ValueError):
        name = getattr(typ, "__name__", str(typ))
        raise ConfigError(f"{key}: expected {name}, got {value!r}") from None
    choices = meta.get("choices")
    if choices is not None and out not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(map(str, choices))}, got {out!r}")
    minimum = meta.get("minimum")
    if minimum is not None and out < minimum:
        raise ConfigError(f"{key}: must be >= {minimum}, got {out!r}")
    return out


def _validate(cfg: Config) -> None:
    prune = cfg.node.prune_mib
    if prune not in (0, 1) and prune < 550:
        raise ConfigError(f"node.prune_mib: must be 0 (off), 1 (manual) or >= 550, got {prune}")
    if cfg.node.tor != "off" and not (cfg.tor.enabled and cfg.tor.socks_port):
        raise ConfigError(f"node.tor: {cfg.node.tor!r} needs tor.enabled and a tor.socks_port")


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Read ``path`` (TOML; may be None for defaults), then HEARTH_* from ``env``.

    ``overrides`` (``{"section": {"key": value}}``) is applied last; tests and ``sim``
    use it. Unknown sections or keys are errors, so a typo never passes silently.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    sections = _sections()
    for name, value in raw.items():
        if name not in sections:
            raise ConfigError(f"{name}: unknown section (known: {', '.join(sections)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: must be a table ([{name}])")
    built: dict[str, Any] = {}
    for sname, scls in sections.items():
        hints = typing.get_type_hints(scls)
        fields = {f.name: f for f in dataclasses.fields(scls)}
        given = dict(raw.get(sname, {}))
        for key in given:
            if key not in fields:
                raise ConfigError(f"{sname}.{key}: unknown key (known: {', '.join(fields)})")
        values: dict[str, Any] = {}
        for fname, f in fields.items():
            key = f"{sname}.{fname}"
            env_name = f"HEARTH_{sname}_{fname}".upper()
            if fname in given:
                values[fname] = _coerce(key, hints[fname], given[fname], f.metadata, False)
            if env_name in env:
                values[fname] = _coerce(env_name, hints[fname], env[env_name], f.metadata, True)
            if overrides and fname in overrides.get(sname, {}):
                values[fname] = _coerce(key, hints[fname], overrides[sname][fname], f.metadata, False)
        built[sname] = scls(**values)
    cfg = Config(**built, path=Path(path) if path is not None else None)
    _validate(cfg)
    return cfg


def render_reference() -> str:
    """Markdown reference of every option (kept in docs/config.md)."""
    lines = ["| key | type | default | environment | meaning |", "|---|---|---|---|---|"]
    for sname, scls in _sections().items():
        hints = typing.get_type_hints(scls)
        for f in dataclasses.fields(scls):
            typ = getattr(hints[f.name], "__name__", str(hints[f.name]))
            env_name = f"HEARTH_{sname}_{f.name}".upper()
            lines.append(
                f"| `{sname}.{f.name}` | {typ} | `{f.default!s}` | `{env_name}` | {f.metadata['doc']} |"
            )
    return "\n".join(lines) + "\n"


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_value(value: Any) -> str:
    """``value`` (a string, path, number or true/false: what hearth.toml holds) as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return ("-" if value < 0 else "") + ("nan" if math.isnan(value) else "inf")
        return repr(value)
    if isinstance(value, str | Path):
        # A JSON string is a valid TOML basic string (same escapes, \uXXXX included).
        return json.dumps(str(value), ensure_ascii=False)
    raise ConfigError(f"unsupported value {value!r}: hearth.toml holds only strings, "
                      "numbers and true/false")


def dump_toml(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """A hearth.toml holding ``tables`` (section -> key -> value; None values left out),
    the one writer for generated configuration files (tests, the boot-partition merge)."""
    lines: list[str] = []
    for section, table in tables.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            if not _BARE_KEY.match(key) or not _BARE_KEY.match(section):
                raise ConfigError(f"{section}.{key}: not a hearth.toml key")
            if value is not None:
                lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"
