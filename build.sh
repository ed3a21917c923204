#!/usr/bin/env bash
# Hearth's two commands (see README.md):
#   ./build.sh              the SD-card image (out/hearth-<version>-arm64.img.xz) and the
#                           signed update bundle (out/hearth-<version>-arm64.raucb)
#   ./build.sh bundle       the same without compressing the image: for the bundle
#   ./build.sh sim [up|down|status]
#                           the appliance's services on this machine, regtest, no hardware
#   ./build.sh test [PYTEST ARGS]
#                           install what the tests need, then run the whole suite
#   ./build.sh test --firmware [PYTEST ARGS]
#                           build the image if there is none, boot it under QEMU and test it
# Each chore is its own script under scripts/; this file only dispatches.
set -euo pipefail
cd "$(dirname "$0")"

cmd=${1:-image}
[ $# -gt 0 ] && shift
case "$cmd" in
  image)
    exec scripts/build-image "$@" ;;
  bundle)
    exec scripts/build-image --no-xz "$@" ;;
  sim)
    scripts/setup-dev
    exec .venv/bin/python scripts/sim.py "$@" ;;
  test)
    scripts/setup-dev --test
    if [ "${1:-}" = --firmware ]; then
      shift
      scripts/depends firmware
      version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' appliance/__init__.py)
      [ -n "${HEARTH_IMAGE:-}" ] || [ -e "out/hearth-$version-arm64.img" ] || scripts/build-image
      HEARTH_FIRMWARE=1 exec scripts/test -m firmware -s firmware-tests/image "$@"
    fi
    exec scripts/test "$@" ;;
  -h|--help|help)
    sed -n '2,12p' "$0" ;;
  *)
    echo "build.sh: unknown command '$cmd' (image, bundle, sim, test)" >&2; exit 2 ;;
esac
