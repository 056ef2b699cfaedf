#!/usr/bin/env bash
# make demo: the product on one node, end to end, on a real tree (the Go toolchain's own
# source, present wherever Go is):
#   1. start a hub and a daemon on loopback, in a temporary directory;
#   2. pack the tree and push it to the hub (only the blocks the hub lacks travel);
#   3. mount it by CID through the daemon: the whole tree shows at once, nothing fetched;
#   4. read one file: only its blocks are fetched — the daemon's status shows it;
#   5. clean up: unmount, stop the daemon and the hub, remove everything.
# Needs root and /dev/fuse for the mount; without them it stops after step 2.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
BIN=${BIN:-bin/zosfs-agent}
SRC=${DEMO_SOURCE:-$(go env GOROOT)/src}
work=$(mktemp -d)
pids=()
cleanup() {
  set +e
  [ -n "${mnt:-}" ] && "$BIN" umount --api "$work/agent.sock" "$mnt" 2>/dev/null
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"

# The hub picks a free loopback port and logs it.
"$BIN" hub --data "$work/hub" --listen 127.0.0.1:0 --token-file "$work/token" 2> "$work/hub.log" &
pids+=($!)
addr=$(hub_addr "$work/hub.log")
hub="http://$addr"
echo "== 1. a hub on $hub and a daemon (data and logs in $work)"
# Loopback only and no mDNS: the demo stays on this machine.
"$BIN" daemon --data "$work/data" --api "$work/agent.sock" --hub "$hub" \
  --no-mdns --listen /ip4/127.0.0.1/tcp/0 2> "$work/daemon.log" &
pids+=($!)
for _ in $(seq 100); do "$BIN" status --api "$work/agent.sock" >/dev/null 2>&1 && break; sleep 0.1; done

echo "== 2. pack $SRC and push it to the hub as demo/go-src"
cid=$("$BIN" push --hub "$hub" --token-file "$work/token" --name demo/go-src "$SRC" | tail -n 1)
echo "   CID $cid"

if [ "$(id -u)" != 0 ] || [ ! -e /dev/fuse ]; then
  echo "== (mounting needs root and /dev/fuse: stopping here)"
  exit 0
fi

mnt="$work/mnt"; mkdir -p "$mnt"
echo "== 3. mount $cid at $mnt"
"$BIN" mount --api "$work/agent.sock" "$cid" "$mnt"
echo "   $(find "$mnt" | wc -l) entries visible; fetched so far:"
"$BIN" status --api "$work/agent.sock" | grep -E '^(fetched|cache)' | sed 's/^/   /'

file=net/http/server.go
echo "== 4. read /$file ($(stat -c %s "$SRC/$file") bytes) through the mount"
cmp "$mnt/$file" "$SRC/$file" && echo "   identical to the source"
"$BIN" status --api "$work/agent.sock" | grep -E '^(fetched|cache|mount)' | sed 's/^/   /'
echo "   (the tree holds $(du -sh --apparent-size "$SRC" | cut -f1); only this file's blocks were fetched)"

echo "== 5. clean up"
"$BIN" umount --api "$work/agent.sock" "$mnt" && mnt=
