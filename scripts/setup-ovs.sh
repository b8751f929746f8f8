#!/bin/sh
# Install Open vSwitch (userspace daemons + utilities) for the differential
# tests in tests/. Idempotent and non-interactive: does nothing when
# ovs-vswitchd is already installed. The tests start their own private
# ovsdb-server/ovs-vswitchd with the dummy datapath; no kernel module and no
# system service are needed, so the packaged service is not started here.
set -eu

if command -v ovs-vswitchd >/dev/null 2>&1 || [ -x /usr/sbin/ovs-vswitchd ]; then
    echo "setup-ovs: $(/usr/sbin/ovs-vswitchd --version 2>/dev/null | head -n1 || echo ovs-vswitchd) already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# policy-rc.d-free install: the package's service may fail to start without
# the kernel module; that is harmless for the tests, so do not fail on it.
$SUDO apt-get install -y -q --no-install-recommends openvswitch-switch || {
    command -v ovs-vswitchd >/dev/null 2>&1 || [ -x /usr/sbin/ovs-vswitchd ] || exit 1
}
/usr/sbin/ovs-vswitchd --version | head -n1
