#!/usr/bin/env bash
# Demo: the seeds' NodePort ETP Cluster chain (DNAT to the virtual IP in zone
# 52100, SNAT to the gateway IP in zone 52200, endpoint DNAT in zone 65500)
# with a full TCP exchange, replayed through flowpath, then one packet traced.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build --release -q -p ctrl
FP=${CARGO_TARGET_DIR:-target}/release/flowpath
S=tests/scenarios/nodeport_etp_cluster
PORTS=$(cat $S/ports.txt)
echo "== flowpath check"
$FP check $S/flows.txt --groups $S/groups.txt
echo
echo "== flowpath replay (text): client 10.176.26.36 -> NodePort 10.176.25.244:30232 -> pod 172.16.2.10:8080"
$FP replay --flows $S/flows.txt --groups $S/groups.txt --ports "$PORTS" --packets $S/steps.txt --format text
echo
echo "== flowpath trace: the client's SYN"
$FP trace --flows $S/flows.txt --groups $S/groups.txt --ports "$PORTS" --in-port uplink \
  --flow 'tcp,dl_src=00:50:56:a7:ca:77,dl_dst=00:50:56:a7:35:0b,nw_src=10.176.26.36,nw_dst=10.176.25.244,tp_src=40001,tp_dst=30232,tcp_flags=+syn'
# As root (AF_XDP, TUN, namespaces): a real curl through `flowpath run`.
if [ "$(id -u)" -eq 0 ] && [ "${DEMO_NETNS:-1}" = 1 ]; then
  echo
  echo "== flowpath run in a namespace cluster (scripts/demo-netns.sh; DEMO_NETNS=0 skips)"
  FLOWPATH=$FP scripts/demo-netns.sh
fi
