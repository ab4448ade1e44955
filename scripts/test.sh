#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up, lint, type check, build, all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
PNPM="npx -y pnpm@10.34.8"
$PNPM run lint
$PNPM run typecheck
$PNPM run docs >/dev/null
# Property tests run longer in CI than locally (see packages/core/test/fc.ts).
$PNPM exec vitest run --reporter=default --reporter=./scripts/summary-reporter.ts
