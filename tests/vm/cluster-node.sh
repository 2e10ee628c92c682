#!/bin/sh
# SPDX-License-Identifier: MIT
# One node of the virtual cluster (run inside its VM by tests/vm/cluster.sh):
# starts this node's ranks of COMMAND, prefixes their output with the rank,
# and exits with the first failing rank's status.
# usage: cluster-node.sh NODE RANKS_PER_NODE SIZE COMMAND [ARG...]
node=$1 rpn=$2 size=$3
shift 3
dir=$(mktemp -d)
i=0
while [ $i -lt "$rpn" ]; do
	r=$((node * rpn + i))
	(
		SPARDL_RANK=$r SPARDL_SIZE=$size SPARDL_LOCAL_RANK=$i SPARDL_LOCAL_SIZE=$rpn
		export SPARDL_RANK SPARDL_SIZE SPARDL_LOCAL_RANK SPARDL_LOCAL_SIZE
		{ "$@"; echo $? >"$dir/rc.$r"; } 2>&1 | sed -u "s/^/[$r] /"
	) &
	i=$((i + 1))
done
wait
status=0
i=0
while [ $i -lt "$rpn" ]; do
	r=$((node * rpn + i))
	rc=$(cat "$dir/rc.$r" 2>/dev/null || echo 125)
	if [ "$rc" != 0 ] && [ $status = 0 ]; then
		echo "cluster-node $node: rank $r exited with status $rc"
		status=$rc
	fi
	i=$((i + 1))
done
rm -rf "$dir"
exit $status
