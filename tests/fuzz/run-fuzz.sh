#!/bin/sh
# SPDX-License-Identifier: MIT
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a bounded time from its committed corpus (TAP).
# usage: run-fuzz.sh SOURCE_ROOT BUILD_DIR SECONDS_PER_TARGET
src=${1:?usage: run-fuzz.sh SOURCE_ROOT BUILD_DIR SECONDS}
build=${2:?}
secs=${3:-20}
cc=${CLANG:-clang}
if ! command -v "$cc" >/dev/null 2>&1; then
	echo "1..0 # SKIP clang is not installed (apt-get install clang libclang-rt-14-dev)"
	exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
flags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -D_GNU_SOURCE
	-I$src/src -I$src/include -I$build/include -I$build"
# Probe: libFuzzer's runtime ships in libclang-rt-*-dev.
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }\n' >"$tmp/probe.c"
if ! $cc $flags "$tmp/probe.c" -o "$tmp/probe" >"$tmp/probe.log" 2>&1; then
	echo "1..0 # SKIP clang cannot link libFuzzer here ($(head -c 200 "$tmp/probe.log" | tr '\n' ' '))"
	exit 77
fi
n=0
bad=0
echo "1..3"
for t in bootstrap wire notify; do
	n=$((n + 1))
	case $t in
	bootstrap) extra="$src/src/bootstrap_msg.c $src/src/log.c $src/src/env.c -lcrypto -lpthread" ;;
	wire) extra="" ;;
	notify) extra="$src/src/schedule.c $src/src/log.c $src/src/env.c -lpthread" ;;
	esac
	# shellcheck disable=SC2086
	if ! $cc $flags "$src/tests/fuzz/fuzz_$t.c" $extra -o "$tmp/fuzz_$t" >"$tmp/$t.build" 2>&1; then
		echo "not ok $n - fuzz_$t: build failed"
		sed 's/^/# /' "$tmp/$t.build" | tail -20
		bad=$((bad + 1))
		continue
	fi
	# New inputs go to a scratch copy; the committed corpus is only read.
	mkdir -p "$tmp/corpus_$t"
	cp "$src/tests/fuzz/corpus/$t"/* "$tmp/corpus_$t/" 2>/dev/null
	if (cd "$tmp" && ASAN_OPTIONS=detect_leaks=1 SPARDL_DEBUG=none ./fuzz_$t -max_total_time="$secs" -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 "corpus_$t" >"$tmp/$t.log" 2>&1); then
		runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$tmp/$t.log")
		echo "ok $n - fuzz_$t: ${runs:-?} inputs in ${secs} s, no crash, leak or undefined behaviour"
	else
		echo "not ok $n - fuzz_$t: a crash (the reproducer is in the log)"
		sed 's/^/# /' "$tmp/$t.log" | tail -40
		bad=$((bad + 1))
	fi
done
[ "$bad" = 0 ]
