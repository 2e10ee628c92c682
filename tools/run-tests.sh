#!/usr/bin/env bash
# Configures a fresh build directory, runs every test suite and prints "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
build=${SPARDL_BUILD_DIR:-build-tests}
rm -rf "$build"
meson setup "$build" >"$build.setup.log" 2>&1 || { cat "$build.setup.log"; echo "0 passed, 1 failed (meson setup)"; exit 1; }
ninja -C "$build" || { echo "0 passed, 1 failed (build)"; exit 1; }
meson test -C "$build" --print-errorlogs "$@"
status=$?
python3 - "$build/meson-logs/testlog.json" <<'PY'
import json, sys
counts = {"passed": 0, "failed": 0, "skipped": 0}
try:
    lines = open(sys.argv[1]).read().splitlines()
except OSError:
    lines = []
for line in lines:
    r = json.loads(line).get("result", "")
    if r in ("OK", "EXPECTEDFAIL"):
        counts["passed"] += 1
    elif r == "SKIP":
        counts["skipped"] += 1
    else:
        counts["failed"] += 1
print(f"{counts['passed']} passed, {counts['failed']} failed" +
      (f", {counts['skipped']} skipped" if counts["skipped"] else ""))
PY
exit $status
