#!/usr/bin/env bash
# Demo: flowpath run from Kubernetes manifests, with real curls. Builds a
# small cluster out of network namespaces (an external client; a node whose
# uplink eth0 and pod veths are served by `flowpath run` over AF_XDP, with the
# TAP gateway antrea-gw0 into its host stack; two pods with an HTTP server,
# one also answering UDP), runs examples/node.toml as is (its Services and
# EndpointSlices are examples/services/*.yaml; only the control socket moves
# to a temporary directory), then curls a NodePort with
# externalTrafficPolicy Cluster and Local, a ClusterIP and a UDP Service,
# looks at the running node through the control socket (dump-flows,
# dump-conntrack, stats), adds a Service and reloads.
# Needs root, AF_XDP and TUN; everything it creates is removed on exit.
#
#   scripts/demo-netns.sh            # uses target/release/flowpath (built if missing)
#   FLOWPATH=path/to/flowpath scripts/demo-netns.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FP=${FLOWPATH:-${CARGO_TARGET_DIR:-target}/release/flowpath}
[ -x "$FP" ] || cargo build --release -q -p ctrl
FP=$(realpath "$FP")
T=$$
EXT=fpd-$T-ext N1=fpd-$T-node POD1=fpd-$T-pod1 POD2=fpd-$T-pod2 E0=e$T
DIR=$(mktemp -d /tmp/fpd-$T.XXXX)
SOCK=$DIR/flowpath.sock
FPPID=
cleanup() {
  [ -n "$FPPID" ] && kill "$FPPID" 2>/dev/null && wait "$FPPID" 2>/dev/null || true
  for ns in $EXT $N1 $POD1 $POD2; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$DIR"
}
trap cleanup EXIT
inns() { ip netns exec "$@"; }
fpctl() { "$FP" "$@" --socket "$SOCK"; }
show() { echo "\$ flowpath $*"; fpctl "$@"; }
udp() { # udp NS IP PORT: one datagram, print the answer
  inns "$1" python3 -c "import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(b'ping', ('$2', $3)); print(s.recv(2048).decode(), end='')"
}

# The node's interfaces carry examples/node.toml's names inside its namespace.
for ns in $EXT $N1 $POD1 $POD2; do ip netns add "$ns"; done
ip link add $E0 netns $EXT numtxqueues 2 numrxqueues 2 type veth peer eth0 netns $N1 numtxqueues 2 numrxqueues 2
ip link add veth-pod1 netns $N1 type veth peer eth0 netns $POD1
ip link add veth-pod2 netns $N1 type veth peer eth0 netns $POD2
inns $EXT sh -ec "ip link set lo up; ip link set $E0 address 00:50:56:a7:ca:77 up
  ip addr add 10.176.26.36/16 dev $E0; ethtool -K $E0 tx off >/dev/null"
inns $N1 sh -ec "ip link set lo up
  sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
    net.ipv4.conf.all.accept_local=1 net.ipv4.conf.default.accept_local=1
  ip link set eth0 address 00:50:56:a7:35:0b up; ip addr add 10.176.25.244/16 dev eth0
  ip link set veth-pod1 up; ip link set veth-pod2 up"
for x in "$POD1 172.16.2.10 0a:58:ac:10:02:0a pod1" "$POD2 172.16.2.11 0a:58:ac:10:02:0b pod2"; do
  set -- $x
  inns "$1" sh -ec "ip link set lo up; ip link set eth0 address $3 up; ip addr add $2/24 dev eth0
    ip route add default via 172.16.2.1; ethtool -K eth0 tx off >/dev/null"
  ip netns exec "$1" python3 scripts/e2e-http-server.py "$4" "$2" 8080 >"$DIR/$4.log" &
done
ip netns exec $POD2 python3 scripts/e2e-http-server.py pod2-dns 172.16.2.11 5353 udp >"$DIR/dns.log" &

cp -r examples/services "$DIR/services"
sed "s|^control_socket = .*|control_socket = \"$SOCK\"|" examples/node.toml >"$DIR/node.toml"
echo "== flowpath run --config node.toml (examples/node.toml; services = examples/services: $(cd examples/services && echo *.yaml))"
ip netns exec $N1 "$FP" run --config "$DIR/node.toml" >"$DIR/flowpath.log" 2>&1 &
FPPID=$!
for _ in $(seq 100); do grep -q ready "$DIR/flowpath.log" 2>/dev/null && break; sleep 0.1; done
grep ready "$DIR/flowpath.log" || { cat "$DIR/flowpath.log"; exit 1; }
inns $N1 sh -ec "ip route add 169.254.169.110/32 dev antrea-gw0
  ip route add 10.96.0.0/16 dev antrea-gw0 src 172.16.2.1"
for _ in $(seq 50); do grep -q listening "$DIR/pod1.log" && grep -q listening "$DIR/pod2.log" \
  && grep -q listening "$DIR/dns.log" && break; sleep 0.1; done

echo
echo "== external client 10.176.26.36: curl http://10.176.25.244:30080 (shop/web: NodePort, ETP Cluster -> pod1)"
inns $EXT curl -sS --max-time 5 http://10.176.25.244:30080/
echo "== external client: curl http://10.176.25.244:30081 (shop/web-local: NodePort, ETP Local -> pod2, client IP kept)"
inns $EXT curl -sS --max-time 5 http://10.176.25.244:30081/
echo "== pod1: curl http://10.96.0.20 four times (shop/api: ClusterIP, pod1 + pod2; pod1 reaching itself is hairpinned)"
for sport in 40001 40002 40003 40004; do inns $POD1 curl -sS --max-time 5 --local-port $sport http://10.96.0.20/; done
echo "== pod1: one UDP datagram to 10.96.0.53:53 (kube-system/dns: ClusterIP, UDP -> pod2:5353)"
udp $POD1 10.96.0.53 53
echo
show dump-flows 41
echo
show dump-conntrack
echo
echo "== external client: 20 more requests and a 256 KiB download"
for _ in $(seq 20); do inns $EXT curl -sS --max-time 5 -o /dev/null http://10.176.25.244:30080/; done
inns $EXT curl -sS --max-time 5 -o /dev/null -w "downloaded %{size_download} bytes\n" http://10.176.25.244:30080/big
echo
show stats
echo
echo "== a new Service: shop/web2 (NodePort 30082 -> pod2) written to the services directory"
cat >"$DIR/services/web2.yaml" <<'EOF'
apiVersion: v1
kind: Service
metadata: {name: web2, namespace: shop}
spec:
  type: NodePort
  clusterIP: 10.96.0.12
  ports:
  - {name: http, nodePort: 30082, port: 80, protocol: TCP, targetPort: 8080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web2-abcde
  namespace: shop
  labels: {kubernetes.io/service-name: web2}
addressType: IPv4
endpoints:
- addresses: [172.16.2.11]
  nodeName: node-a
ports:
- {name: http, port: 8080, protocol: TCP}
EOF
show reload
echo "== external client: curl http://10.176.25.244:30082"
inns $EXT curl -sS --max-time 5 http://10.176.25.244:30082/
kill -TERM $FPPID; wait $FPPID; FPPID=
echo "== SIGTERM: flowpath exited 0; XDP programs left on the node's interfaces: $(inns $N1 ip link | grep -c prog/xdp || true)"
