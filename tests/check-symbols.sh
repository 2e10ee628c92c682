#!/bin/sh
# SPDX-License-Identifier: MIT
# The shared library exports exactly the functions the public header declares with SPARDL_API.
header=$1
lib=$2
want=$(sed -n "s/^SPARDL_API .*[ *(]\\(spardl_[a-z0-9_]*\\))*(.*/\\1/p" "$header" | sort -u)
have=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TtWw]$/ {print $3}' | sed 's/@.*//' | sort -u)
if [ -z "$want" ]; then
	echo "no SPARDL_API declarations found in $header"
	exit 1
fi
if [ "$want" != "$have" ]; then
	echo "exported symbols differ from the header:"
	echo "$want" >/tmp/spardl-want.$$
	echo "$have" >/tmp/spardl-have.$$
	diff /tmp/spardl-want.$$ /tmp/spardl-have.$$
	rm -f /tmp/spardl-want.$$ /tmp/spardl-have.$$
	exit 1
fi
echo "$(echo "$want" | wc -l) exported symbols match the header"
