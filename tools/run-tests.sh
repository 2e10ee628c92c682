#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Configures a fresh build directory, runs every test suite and prints "N passed, N failed".
# Then a second build with AddressSanitizer and UndefinedBehaviorSanitizer runs the unit,
# shm and trust suites; the last line counts the tests of both builds. Arguments go to the first
# meson test only. SPARDL_SANITIZE=0 skips the sanitizer build.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${SPARDL_BUILD_DIR:-build-tests}
rm -rf "$build"
# The Python suites need numpy and torch, which Debian installs for its own
# interpreter; another python3 earlier on PATH may lack them.
pyopt=()
[ -x /usr/bin/python3 ] && pyopt=(-Dpython=/usr/bin/python3)
# nvcc builds the GPU kernels; the toolkit puts it outside PATH. The
# sanitizer build below keeps the PATH it was given (no kernels there).
path0=$PATH
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
	export PATH=$PATH:/usr/local/cuda/bin
fi
meson setup "$build" "${pyopt[@]}" >"$build.setup.log" 2>&1 || { cat "$build.setup.log"; echo "0 passed, 1 failed (meson setup)"; exit 1; }
grep -E 'CUDA' "$build.setup.log" || true
ninja -C "$build" || { echo "0 passed, 1 failed (build)"; exit 1; }
meson test -C "$build" --print-errorlogs "$@"
status=$?
logs=("$build/meson-logs/testlog.json")
extra_failed=0

# ---- the same sources under ASan + UBSan: unit, shm, trust and cudasim suites ----
# Any sanitizer report ends the process with status 1 (UBSan only with halt_on_error),
# which fails the test: Check reports a forked test's early exit, spardl-run the rank's
# status. Options already in ASAN_OPTIONS / UBSAN_OPTIONS are appended and win.
if [ "${SPARDL_SANITIZE:-1}" != 0 ]; then
	san="$build-asan"
	san_start=$SECONDS
	rm -rf "$san"
	echo "==== sanitizer build $san (-Db_sanitize=address,undefined): suites unit, shm, trust, cudasim ===="
	if ! PATH=$path0 meson setup "$san" "${pyopt[@]}" -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false \
		>"$san.setup.log" 2>&1; then
		cat "$san.setup.log"
		echo "sanitizer build: meson setup failed"
		extra_failed=$((extra_failed + 1)) status=1
	elif ! ninja -C "$san"; then
		echo "sanitizer build: build failed"
		extra_failed=$((extra_failed + 1)) status=1
	else
		asan_opts="halt_on_error=1:detect_leaks=1"
		# LeakSanitizer stops the process with ptrace at exit; under a debugger or
		# tracer, or where ptrace is refused, it cannot run: probe once, say so, go on
		# without leak checks rather than fail every test.
		probe="$san/lsan-probe"
		if echo 'int main(void) { return 0; }' | cc -fsanitize=address -x c - -o "$probe" 2>/dev/null &&
			! ASAN_OPTIONS=detect_leaks=1 "$probe" >"$probe.log" 2>&1; then
			echo "sanitizer build: LeakSanitizer cannot run here (leak checks off):"
			cat "$probe.log"
			asan_opts="halt_on_error=1:detect_leaks=0"
		fi
		ASAN_OPTIONS="$asan_opts${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
		UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" \
			meson test -C "$san" --print-errorlogs --timeout-multiplier 3 --suite unit --suite shm --suite trust --suite cudasim ||
			status=1
		logs+=("$san/meson-logs/testlog.json")
	fi
	echo "sanitizer build: $((SECONDS - san_start)) s (setup, build and tests)"
fi

python3 - "$extra_failed" "${logs[@]}" <<'PY'
import json, sys
total = {"passed": 0, "failed": int(sys.argv[1]), "skipped": 0}
for log in sys.argv[2:]:
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    try:
        lines = open(log).read().splitlines()
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
    for k in total:
        total[k] += counts[k]
    if len(sys.argv) > 3:
        print(f"{log.split('/meson-logs/')[0]}: {counts['passed']} passed, {counts['failed']} failed" +
              (f", {counts['skipped']} skipped" if counts["skipped"] else ""))
print(f"{total['passed']} passed, {total['failed']} failed" +
      (f", {total['skipped']} skipped" if total["skipped"] else ""))
PY
exit $status
