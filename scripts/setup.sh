#!/usr/bin/env bash
# Installs what dicomfs needs on a fresh Debian/Ubuntu machine: the given apt packages when their
# commands are missing, and a virtual environment in .venv with dicomfs (and EXTRAS) installed.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
if [ "$extras" = "test" ]; then
  [ -x /usr/sbin/Orthanc ] || need+=(orthanc)
  command -v dcmqrscp >/dev/null 2>&1 || need+=(dcmtk)
  command -v ss >/dev/null 2>&1 || need+=(iproute2)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  command -v rsync >/dev/null 2>&1 || need+=(rsync)  # byte-exact copies with rsync are tested
  command -v getfattr >/dev/null 2>&1 || need+=(attr)  # getfattr reads the user.dicom.* attributes
fi
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec"
