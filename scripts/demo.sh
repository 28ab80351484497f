#!/usr/bin/env bash
# Sets up dicomfs (apt: fuse3; .venv) and mounts the bundled sample archive.
# Usage: scripts/demo.sh [MOUNTPOINT]   (default /tmp/dicomfs-demo); unmount: fusermount3 -u MOUNTPOINT
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mountpoint="${1:-/tmp/dicomfs-demo}"
mkdir -p "$mountpoint"
exec .venv/bin/dicomfs demo "$mountpoint"
