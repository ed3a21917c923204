"""Update bundles for the firmware tests, made on the host from the image under test.

"Version X+1" is the same system with another version: slot A's root filesystem taken out
of the image, ``/etc/hearth-release`` (and whatever a test breaks on purpose) rewritten
with ``debugfs``, bundled and signed by ``scripts/build-bundle`` with the key the image
trusts. Refused bundles (bad signature, other architecture) carry a tiny filesystem:
RAUC refuses them before it reads any image.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from .conftest import REPO


def slot_rootfs(image: Path, dest: Path) -> Path:
    """Slot A's root filesystem (partition 2), cut to the filesystem's own size."""
    table = json.loads(subprocess.run(["sfdisk", "-J", str(image)], check=True, capture_output=True,
                                      text=True).stdout)["partitiontable"]["partitions"]
    slot = table[1]
    subprocess.run(["dd", f"if={image}", f"of={dest}", "bs=4M", f"skip={slot['start'] * 512}",
                    f"count={slot['size'] * 512}", "iflag=skip_bytes,count_bytes", "conv=sparse",
                    "status=none"], check=True)
    head = subprocess.run(["dumpe2fs", "-h", str(dest)], check=True, capture_output=True, text=True).stdout
    blocks = int(re.search(r"^Block count:\s+(\d+)", head, re.M)[1])  # type: ignore[index]
    size = int(re.search(r"^Block size:\s+(\d+)", head, re.M)[1])  # type: ignore[index]
    os.truncate(dest, blocks * size)
    return dest


def edit_rootfs(ext4: Path, files: dict[str, bytes], scratch: Path) -> None:
    """Replace files (absolute paths in the filesystem) with ``debugfs -w``."""
    cmds = []
    for i, (path, data) in enumerate(sorted(files.items())):
        src = scratch / f"edit-{i}"
        src.write_bytes(data)
        cmds += [f"rm {path}", f"write {src} {path}", f"sif {path} mode 0100644",
                 f"sif {path} uid 0", f"sif {path} gid 0"]
    script = scratch / "debugfs.cmds"
    script.write_text("\n".join(cmds) + "\n")
    subprocess.run(["debugfs", "-w", "-f", str(script), str(ext4)], check=True, capture_output=True)
    subprocess.run(["e2fsck", "-fn", str(ext4)], check=True, capture_output=True)


def read_rootfs(ext4: Path, path: str) -> bytes:
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(ext4)], check=True,
                          capture_output=True).stdout


def make_bundle(rootfs: Path, version: str, out: Path, compatible: str | None = None,
                key: tuple[Path, Path] | None = None) -> Path:
    """``scripts/build-bundle``; ``key`` = (key, certificate) of another signer."""
    env = dict(os.environ)
    if key is not None:
        env["HEARTH_SIGNING_KEY"], env["HEARTH_SIGNING_CERT"] = map(str, key)
    subprocess.run([str(REPO / "scripts/build-bundle"), str(rootfs), version, str(out),
                    *([compatible] if compatible else [])], check=True, capture_output=True, env=env,
                   timeout=1200)
    return out


def tiny_rootfs(dest: Path) -> Path:
    tree = dest.with_suffix(".tree")
    tree.mkdir(exist_ok=True)
    (tree / "filler").write_bytes(os.urandom(256 * 1024))  # squashfs needs more than a block
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(dest), "8M"], check=True,
                   capture_output=True)
    return dest


def other_signer(workdir: Path) -> tuple[Path, Path]:
    """A key and certificate the image does not trust."""
    key, cert = workdir / "other.key.pem", workdir / "other.cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "30", "-subj", "/CN=not Hearth's signer", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    return key, cert


__all__ = ["edit_rootfs", "make_bundle", "other_signer", "read_rootfs", "slot_rootfs", "tiny_rootfs"]
