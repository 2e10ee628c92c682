#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs into a staging root, then builds and runs a program through pkg-config alone.
set -eu
build=$1
example=$2
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
meson install -C "$build" --destdir "$stage" --quiet >/dev/null
pc=$(find "$stage" -name spardl.pc | head -n 1)
[ -n "$pc" ] || { echo "spardl.pc was not installed"; exit 1; }
prefix=$(sed -n 's/^prefix=//p' "$pc")
pcdir=$(dirname "$pc")
flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --define-variable=prefix="$stage$prefix" --cflags --libs spardl)
cc -std=c11 -Wall -Werror -o "$stage/example" "$example" $flags
libdir=$(PKG_CONFIG_PATH="$pcdir" pkg-config --define-variable=prefix="$stage$prefix" --variable=libdir spardl)
SPARDL_RANK=0 SPARDL_SIZE=1 LD_LIBRARY_PATH="$libdir" "$stage/example"
