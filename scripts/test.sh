#!/usr/bin/env bash
# Runs dot's whole test suite: unit, property, integration, crash and
# PostgreSQL tests. Installs the system packages the tests use first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo test --all-targets
