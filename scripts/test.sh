#!/usr/bin/env bash
# Sets up a fresh machine for the tests (apt: fuse3, orthanc, dcmtk; .venv with test extras),
# checks style and types, then runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
