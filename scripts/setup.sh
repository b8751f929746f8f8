#!/usr/bin/env bash
# Install what flowpath's build and tests need on a fresh Debian 12 machine.
# Idempotent; safe to run repeatedly. Needs root (or sudo) for apt-get.
set -euo pipefail
need=()
command -v ovs-vswitchd >/dev/null 2>&1 || need+=(openvswitch-switch)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ethtool >/dev/null 2>&1 || need+=(ethtool)  # AF_XDP tests: turn off veth tx checksum offload
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v curl >/dev/null 2>&1 || need+=(curl)  # end-to-end tests: real HTTP clients
command -v iptables >/dev/null 2>&1 || need+=(iptables)  # end-to-end tests: the node host answers gw0 connections via gw0
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${need[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian package starts nothing here (no systemd), and flowpath's tests run
# their own private OVS daemons; make sure no stray system instance holds the
# default sockets.
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo (Rust stable >= 1.95) is required" >&2; exit 1; }
echo "setup: ok ($(ovs-vswitchd --version | head -1), $(cargo --version))"
