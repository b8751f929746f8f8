#!/bin/bash
# Deterministic cost of the seeds' NodePort ETP Cluster chain: instructions
# per established packet through the megaflow-cached engine, counted by
# valgrind's callgrind (no timing, so no machine noise). Runs the fixed
# packet set twice (N1 and N2 packets) and divides the difference, so setup
# (parsing the flows, the handshake) cancels out.
#
#   scripts/bench-insn.sh        (N1=1000 N2=11000)
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${N1:-1000}
N2=${N2:-11000}
cargo build --release -q -p bench --example nodeport_insn
X=${CARGO_TARGET_DIR:-target}/release/examples/nodeport_insn
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$X" "$1" 2>&1 >/dev/null |
    sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'
}
a=$(count "$N1")
b=$(count "$N2")
echo "nodeport chain, established packet, megaflow cache: $(( (b - a) / (N2 - N1) )) instructions/packet ($N1 -> $N2 packets: $a -> $b)"
