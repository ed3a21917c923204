# What the image is made of. Sourced by scripts/build-image; every input that changes the
# image lives here or in the files next to it (the cache keys hash them).

SUITE=trixie
MIRROR=http://deb.debian.org/debian
SECURITY_MIRROR=http://deb.debian.org/debian-security
COMPONENTS="main non-free-firmware"
# Debian packages bitcoin-knots only in unstable; its dependencies are satisfied by trixie.
# Pinned by version (image/apt/hearth.pref lets apt take nothing else from unstable).
KNOTS_VERSION=29.4.knots20260508.3-1

# Boot partition (FAT32, RASPIFIRM) size; the root partition is sized to its content plus
# headroom and grown to fill the card at first boot.
BOOT_MIB=256
ROOT_HEADROOM_MIB=384
# Fixed identifiers so two builds of the same inputs give the same bytes.
DISK_ID=0x48454152          # "HEAR"
ROOT_UUID=4845a8d1-0000-4000-8000-686561727468
ROOT_HASH_SEED=4845a8d1-0001-4000-8000-686561727468
