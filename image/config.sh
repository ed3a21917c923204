# What the image is made of. Sourced by scripts/build-image; every input that changes the
# image lives here or in the files next to it (the cache keys hash them).

SUITE=trixie
MIRROR=http://deb.debian.org/debian
SECURITY_MIRROR=http://deb.debian.org/debian-security
COMPONENTS="main non-free-firmware"
# Debian packages bitcoin-knots only in unstable; its dependencies are satisfied by trixie.
# Pinned by version (image/apt/hearth.pref lets apt take nothing else from unstable).
KNOTS_VERSION=29.4.knots20260508.3-1

# Partitions (docs/image.md, "Layout", says why these sizes): boot (FAT32, RASPIFIRM),
# system slots A and B (fixed: an update writes a whole slot and cannot move partitions),
# data (everything that must survive an update; made small, grown to the card at first
# boot). The root filesystem in a slot is sized to its content plus headroom.
BOOT_MIB=256
SLOT_MIB=1536
DATA_MIB=64
ROOT_HEADROOM_MIB=384
# RAUC: bundles for this image must carry this compatible string (image/rauc/system.conf).
RAUC_COMPATIBLE=hearth-arm64
# Fixed identifiers so two builds of the same inputs give the same bytes.
DISK_ID=0x48454152          # "HEAR"
ROOT_UUID=4845a8d1-0000-4000-8000-686561727468
DATA_UUID=4845a8d1-0002-4000-8000-686561727468
ROOT_HASH_SEED=4845a8d1-0001-4000-8000-686561727468
