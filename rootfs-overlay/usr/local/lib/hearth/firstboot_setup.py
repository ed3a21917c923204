"""First boot, the parts that use the appliance's own code (run by hearth-firstboot).

    firstboot_setup.py identity CONFIG    as user hearth: hsm_secret, derived keys, TLS cert
    firstboot_setup.py bitcoin-conf CONFIG OUT
                                          as root: bitcoin.conf sized to this card and RAM
    firstboot_setup.py merge-config USER_FILE CONFIG
                                          as root: the user's settings over the image's,
                                          key by key (exit 2 and CONFIG untouched if refused)

Prints only public facts (box public key, certificate fingerprint, sizes): never a secret.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from appliance import identity
from appliance.boot.config_merge import MergeError, merge_config_files
from appliance.config import load_config
from appliance.node.bitcoin_conf import BitcoindLayout, render_bitcoin_conf
from appliance.tls import ensure_certificate


def make_identity(config: str) -> None:
    cfg = load_config(config)
    secret = identity.load_or_create_hsm_secret(cfg.hsm_secret_file)
    node = identity.derive_secp256k1(secret, "noise-static")
    print(f"box key {node.public.hex()}")
    print(f"box id {identity.box_id(secret)}")
    # Derived, never stored: checking it derives is all first boot does with it; the
    # display shows it for the user to write down.
    if len(identity.recovery_phrase(secret)) != 12:
        raise SystemExit("recovery phrase derivation is broken")
    print("recovery phrase: derivable (shown on the display)")
    if cfg.electrum.tls == "lan" and cfg.electrum.tls_port:
        tls_dir = cfg.service_dir("indexer")
        tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fp = ensure_certificate(tls_dir / "electrum-cert.pem", tls_dir / "electrum-key.pem",
                                hostname=cfg.electrum.hostname)
        print(f"TLS certificate SHA-256 {fp}")


def write_bitcoin_conf(config: str, out: str) -> None:
    cfg = load_config(config)
    # bitcoind runs as `bitcoin`; the services (user hearth, in group bitcoin) read its RPC
    # cookie where /usr/lib/hearth/image.env says, written group-readable.
    layout = BitcoindLayout(ibd=True, extra={"rpccookiefile": str(cfg.cookie_file),
                                             "rpccookieperms": "group"})
    text = render_bitcoin_conf(cfg, layout)
    path = Path(out)
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    # hearth's node service rewrites it when the initial sync ends (ibd_mode.py); bitcoind
    # reads it through its group. No secret in it: RPC auth is the cookie.
    shutil.chown(tmp, "hearth", "bitcoin")
    os.chmod(tmp, 0o640)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    for line in text.splitlines():
        if line.startswith(("# sized", "# WARNING", "prune=", "dbcache=", "chain=")):
            print(line)


def merge_config(user: str, config: str) -> None:
    try:
        print(merge_config_files(Path(user), Path(config)))
    except MergeError as exc:
        print(f"refused: {exc}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "merge-config":
        merge_config(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "identity":
        make_identity(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "bitcoin-conf":
        write_bitcoin_conf(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
