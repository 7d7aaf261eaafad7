#!/bin/sh
# Builds and runs the map tests against the running kernel (root for kdiff).
set -e
cd "$(dirname "$0")/../../.."
B=build/maptests
mkdir -p $B
CF="-O2 -g -std=gnu11 -D_GNU_SOURCE -Wall -Wno-unused-parameter -Iagent/include/uapi -Iagent -Iagent/maps -pthread"
SRC="$(ls agent/maps/*.c)"
cc $CF -o $B/kdiff agent/maps/tests/kdiff.c $SRC
cc $CF -o $B/stress agent/maps/tests/stress.c $SRC
for t in "$@"; do $B/$t; done
