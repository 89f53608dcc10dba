#!/usr/bin/env bash
# Runs dot's whole test suite: unit, property, integration, crash and
# PostgreSQL tests, then the integration tests again with every command
# going through a daemon (DOT_TEST_DAEMON=1). Installs the system packages
# the tests use first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo test --all-targets
DOT_TEST_DAEMON=1 cargo test --tests
