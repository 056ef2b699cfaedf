#!/usr/bin/env bash
# make bench (mount): reads through a zosfs FUSE mount, each as a ratio against a baseline
# measured in the same run on the same machine (issue 3's goals):
#
#   1. warm sequential read of a ~1 GiB tree (gentree) through the mount vs the same
#      files on local disk (goal: throughput ratio >= 0.9) — page caches warm, then again
#      with the page caches dropped (the daemon's block cache stays warm on disk);
#   2. cold read of one 1 GiB file through a fresh daemon (empty cache) from a hub on
#      loopback vs curl of the same blocks from the same hub (goal: ratio >= 0.8);
#   3. find + stat of a 30,000-entry tree through the mount vs the same tree on disk
#      (goal: <= 2x the time), cold and warm;
#   4. time to first byte of a cold 4 KiB read (fresh daemon) vs one curl of that file's
#      first block from the hub;
#   5. the daemon's peak RSS (VmHWM), as information.
#
# Needs root and /dev/fuse (skipped without them), curl, and Go (the generators).
# Everything the script starts (hub, daemons) is stopped by pid and every mount unmounted on
# exit, failure included. Inputs are generated once under BENCH_DIR and kept; the run's
# data (BENCH_DIR/mount-run) is removed. The results go to docs/BENCHMARKS.md.
#
#   RUNS=3 BENCH_DIR=/var/tmp/zosfs-bench scripts/bench-mount.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
BIN=${BIN:-bin/zosfs-agent}
RUNS=${RUNS:-3}
DIR=${BENCH_DIR:-/var/tmp/zosfs-bench}
SIZE=1GiB
TTFB_FILES=${TTFB_FILES:-5} # files read per fresh daemon in test 4
PAR=8                       # curl's parallelism: the daemon's read-ahead window (mount.DefaultPrefetch)

if [ "$(id -u)" != 0 ] || [ ! -e /dev/fuse ]; then
  echo "bench-mount: mounting needs root and /dev/fuse: skipped" >&2; exit 0
fi
for tool in curl go; do
  command -v "$tool" >/dev/null || { echo "bench-mount: $tool is needed" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "bench-mount: $BIN missing (make build)" >&2; exit 1; }
BIN=$(realpath "$BIN")

log() { echo "bench-mount: $*" >&2; }
now() { echo "$EPOCHREALTIME"; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a - b}'; }
subu() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.6f", a - b}'; } # for test 4's milliseconds
div() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
ms() { awk -v a="$1" 'BEGIN {printf "%.1f", a * 1000}'; }
mib() { awk -v b="$1" -v t="$2" 'BEGIN {printf "%.0f", b / 1048576 / t}'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
med() { printf '%s\n' "$@" | median; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

load=$(cut -d' ' -f1-3 /proc/loadavg)
# ---- inputs, generated once and kept in BENCH_DIR ----------------------------------------
mkdir -p "$DIR"
tree="$DIR/tree-$SIZE" # the same tree as bench-pack.sh
if [ ! -f "$tree.done" ]; then
  rm -rf "$tree"; mkdir -p "$tree"
  log "generating a $SIZE tree in $tree"
  go run ./internal/tools/gentree -size "$SIZE" -seed 1 "$tree" >&2
  touch "$tree.done"
fi
big="$DIR/big-1GiB/file" # one file of random bytes
if [ ! -f "$big.done" ]; then
  log "generating a 1 GiB random file in $big"
  rm -rf "$(dirname "$big")"; mkdir -p "$(dirname "$big")"
  head -c 1G /dev/urandom > "$big"
  touch "$big.done"
fi
small="$DIR/tree-30k" # 30 x 10 directories of 100 files: 30,000 files, 330 directories
if [ ! -f "$small.done" ]; then
  log "generating a 30,000-file tree in $small"
  rm -rf "$small"
  for a in $(seq -w 0 29); do
    for b in $(seq -w 0 9); do
      d="$small/a$a/b$b"; mkdir -p "$d"
      (cd "$d" && touch f{000..099} && head -c 1000 /dev/zero | tr '\0' x > f000)
    done
  done
  touch "$small.done"
fi
fblocks="$DIR/flistblocks"
go build -o "$fblocks" ./internal/tools/flistblocks

# ---- the run's hub, daemons and mounts; all cleaned up on exit -------------------------
work="$DIR/mount-run"
if grep -qs " $work/" /proc/self/mounts; then
  echo "bench-mount: $work still has mounts from an earlier run; unmount them first" >&2; exit 1
fi
rm -rf "$work"; mkdir -p "$work"
pids=() mounts=()
declare -A mount_sock
cleanup() {
  set +e
  local mp pid i
  for mp in "${mounts[@]}"; do
    [ -n "$mp" ] || continue
    timeout 10 "$BIN" umount --api "${mount_sock[$mp]}" "$mp" 2>/dev/null
    grep -qs " $mp " /proc/self/mounts && umount -l "$mp"
  done
  for pid in "${pids[@]}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
"$BIN" hub --data "$work/hub" --listen 127.0.0.1:0 --token-file "$work/token" 2> "$work/hub.log" &
pids+=($!)
addr=$(hub_addr "$work/hub.log")
hub="http://$addr"

# start_daemon NAME: a daemon with an empty data directory; sets $sock and $dpid.
start_daemon() {
  local d="$work/$1"
  rm -rf "$d"; mkdir -p "$d"
  sock="$d/agent.sock"
  # Its p2p node on loopback only and without mDNS: no neighbour (another engineer's test
  # daemon on this host) serves it blocks; every block comes from the hub.
  "$BIN" daemon --data "$d/data" --api "$sock" --hub "$hub" \
    --no-mdns --listen /ip4/127.0.0.1/tcp/0 2> "$d/daemon.log" &
  dpid=$!
  pids+=("$dpid")
  for _ in $(seq 100); do "$BIN" status --api "$sock" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "bench-mount: the daemon did not start:" >&2; cat "$d/daemon.log" >&2; exit 1
}
# stop_daemon PID SOCK: unmounts what it serves (through the CLI), then stops it.
stop_daemon() {
  local pid=$1 s=$2 i mp
  for i in "${!mounts[@]}"; do
    mp=${mounts[$i]}
    if [ -n "$mp" ] && [ "${mount_sock[$mp]}" = "$s" ]; then do_umount "$mp"; fi
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  for i in "${!pids[@]}"; do [ "${pids[$i]}" = "$pid" ] && pids[i]=; done
  return 0
}
do_mount() { # SOCK CID MP
  mkdir -p "$3"
  mounts+=("$3"); mount_sock[$3]=$1
  "$BIN" mount --api "$1" "$2" "$3" > /dev/null
}
do_umount() { # MP
  local i
  "$BIN" umount --api "${mount_sock[$1]}" "$1"
  for i in "${!mounts[@]}"; do [ "${mounts[$i]}" = "$1" ] && mounts[i]=; done
  return 0
}
hwm() { awk '/^VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; } # MiB
fetched() { "$BIN" status --api "$1" --json | sed -n "s/.*\"$2\": \\([0-9][0-9]*\\).*/\\1/p" | head -n 1; } # SOCK hub|peers

log "pushing the inputs to the hub $hub"
push() { "$BIN" push --hub "$hub" --token-file "$work/token" "$1" 2> /dev/null | tail -n 1; }
tree_cid=$(push "$tree")
big_cid=$(push "$(dirname "$big")")
small_cid=$(push "$small")
curl -sf "$hub/flists/$tree_cid" -o "$work/tree.fl"
curl -sf "$hub/flists/$big_cid" -o "$work/big.fl"

tree_bytes=$(du -sb --apparent-size "$tree" | cut -f1)
tree_files=$(find "$tree" -type f | wc -l)
big_bytes=$(stat -c %s "$big")
small_entries=$(find "$small" | wc -l)

# ---- 1. warm sequential read ----------------------------------------------------------
log "1. sequential read of $tree ($tree_files files, $tree_bytes bytes)"
(cd "$tree" && find . -type f -print0 | sort -z) > "$work/files"
readall() { (cd "$1" && xargs -0 cat < "$work/files") > /dev/null; } # same files, same order
start_daemon warm
warm_sock=$sock warm_pid=$dpid
mnt="$work/mnt-tree"
do_mount "$warm_sock" "$tree_cid" "$mnt"
t0=$(now); readall "$mnt"; t1=$(now) # fetches every block from the hub: daemon cache now warm
first_read=$(sub "$t1" "$t0")
readall "$mnt"; readall "$tree" # page caches warm on both sides
cmp -s "$mnt/$(head -zn1 "$work/files" | tr -d '\0')" "$tree/$(head -zn1 "$work/files" | tr -d '\0')" \
  || { echo "bench-mount: the mount does not read back the source" >&2; exit 1; }
disk_warm=() fuse_warm=() disk_cold=() fuse_cold=()
for i in $(seq "$RUNS"); do
  t0=$(now); readall "$tree"; t1=$(now); disk_warm+=("$(sub "$t1" "$t0")")
  t0=$(now); readall "$mnt"; t1=$(now); fuse_warm+=("$(sub "$t1" "$t0")")
  log "  run $i warm: disk ${disk_warm[-1]}s, mount ${fuse_warm[-1]}s"
done
for i in $(seq "$RUNS"); do
  drop_caches; t0=$(now); readall "$tree"; t1=$(now); disk_cold+=("$(sub "$t1" "$t0")")
  drop_caches; t0=$(now); readall "$mnt"; t1=$(now); fuse_cold+=("$(sub "$t1" "$t0")")
  log "  run $i page caches dropped: disk ${disk_cold[-1]}s, mount ${fuse_cold[-1]}s"
done

# ---- 3. find + stat of 30,000 entries (same daemon) ---------------------------------------
log "3. find + stat of $small ($small_entries entries)"
walk() { find "$1" -printf '%y %m %U %G %s %T@\n' > /dev/null; }
smnt="$work/mnt-30k"
find_disk_warm=() find_disk_cold=() find_fuse_fresh=() find_fuse_cold=() find_fuse_warm=()
for i in $(seq "$RUNS"); do
  walk "$small" # warm: the previous run ended with the caches dropped
  t0=$(now); walk "$small"; t1=$(now); find_disk_warm+=("$(sub "$t1" "$t0")")
  drop_caches; t0=$(now); walk "$small"; t1=$(now); find_disk_cold+=("$(sub "$t1" "$t0")")
  do_mount "$warm_sock" "$small_cid" "$smnt"
  t0=$(now); walk "$smnt"; t1=$(now); find_fuse_fresh+=("$(sub "$t1" "$t0")")
  t0=$(now); walk "$smnt"; t1=$(now); find_fuse_warm+=("$(sub "$t1" "$t0")")
  do_umount "$smnt"
  do_mount "$warm_sock" "$small_cid" "$smnt"
  drop_caches; t0=$(now); walk "$smnt"; t1=$(now); find_fuse_cold+=("$(sub "$t1" "$t0")")
  do_umount "$smnt"
  log "  run $i: disk warm ${find_disk_warm[-1]}s, dropped ${find_disk_cold[-1]}s;" \
    "mount fresh ${find_fuse_fresh[-1]}s, fresh+dropped ${find_fuse_cold[-1]}s, warm ${find_fuse_warm[-1]}s"
done
warm_hwm=$(hwm "$warm_pid")
stop_daemon "$warm_pid" "$warm_sock"

# ---- 2. cold read of one 1 GiB file --------------------------------------------------------
log "2. cold read of a 1 GiB file ($big_bytes bytes) from the hub"
# Every fresh daemon gets a data directory of its own, all removed at the end: on ext4,
# creating files right after deleting many makes inode allocation scan for recently deleted
# inodes, which would charge the previous run's clean-up to the next one (see bench-pack.sh).
"$fblocks" "$work/big.fl" /file | awk -v h="$hub" '{print "url = \"" h "/blocks/" substr($1,1,2) "/" $1 "\""; print "output = \"/dev/null\""}' > "$work/big.curl"
nblocks=$(grep -c '^url' "$work/big.curl")
curlall() { # PARALLELISM: total bytes downloaded on stdout
  local p=()
  [ "$1" -gt 1 ] && p=(--parallel --parallel-max "$1")
  curl -sf --no-progress-meter "${p[@]}" -K "$work/big.curl" -w '%{size_download}\n' | awk '{s += $1} END {print s}'
}
curlall "$PAR" > /dev/null # the hub's block files into its page cache, as for every run after
cold_fuse=() cold_curl=() cold_curl1=() cold_hwm=() big_disk_warm=() big_fuse_warm=()
for i in $(seq "$RUNS"); do
  sync; t0=$(now); stored=$(curlall "$PAR"); t1=$(now); cold_curl+=("$(sub "$t1" "$t0")")
  sync; t0=$(now); curlall 1 > /dev/null; t1=$(now); cold_curl1+=("$(sub "$t1" "$t0")")
  start_daemon "cold$i"
  do_mount "$sock" "$big_cid" "$work/mnt-big"
  sync; t0=$(now); cat "$work/mnt-big/file" > /dev/null; t1=$(now); cold_fuse+=("$(sub "$t1" "$t0")")
  fetched=$(fetched "$sock" hub) from_peers=$(fetched "$sock" peers)
  # The same file again, page caches warm on both sides: test 1 without the per-file costs.
  sync; cat "$big" > /dev/null; cat "$work/mnt-big/file" > /dev/null # (the daemon's cache writes flushed)
  t0=$(now); cat "$big" > /dev/null; t1=$(now); big_disk_warm+=("$(sub "$t1" "$t0")")
  t0=$(now); cat "$work/mnt-big/file" > /dev/null; t1=$(now); big_fuse_warm+=("$(sub "$t1" "$t0")")
  cold_hwm+=("$(hwm "$dpid")")
  stop_daemon "$dpid" "$sock"
  log "  run $i: curl x$PAR ${cold_curl[-1]}s, curl x1 ${cold_curl1[-1]}s, mount ${cold_fuse[-1]}s (fetched $fetched bytes from the hub, $from_peers from peers)"
done
[ "$fetched" = "$stored" ] || log "  note: the daemon fetched $fetched bytes, curl $stored"

# ---- 4. time to first byte ----------------------------------------------------------------
log "4. time to first byte of a cold 4 KiB read"
# TTFB_FILES files spread over the tree, different ones for every run.
total=$(tr -cd '\0' < "$work/files" | wc -c)
ttfb_fuse=() ttfb_curl=() ttfb_curl_own=() ttfb_disk=() ttfb_hwm=()
for i in $(seq "$RUNS"); do
  start_daemon "ttfb$i"
  do_mount "$sock" "$tree_cid" "$work/mnt-ttfb"
  for k in $(seq "$TTFB_FILES"); do
    n=$(( (k * RUNS + i - 1) * total / ((TTFB_FILES + 1) * RUNS) + 1 ))
    f=$(tr '\0' '\n' < "$work/files" | sed -n "${n}p"); f=${f#./}
    id=$("$fblocks" -first "$work/tree.fl" "$f")
    t0=$(now); dd if="$work/mnt-ttfb/$f" of=/dev/null bs=4k count=1 status=none; t1=$(now)
    ttfb_fuse+=("$(subu "$t1" "$t0")")
    t0=$(now); ct=$(curl -sf -o /dev/null -w '%{time_total}' "$hub/blocks/${id:0:2}/$id"); t1=$(now)
    ttfb_curl+=("$(subu "$t1" "$t0")") ttfb_curl_own+=("$ct")
    cat "$tree/$f" > /dev/null # dd's own start-up: the same read of the file on disk, warm
    t0=$(now); dd if="$tree/$f" of=/dev/null bs=4k count=1 status=none; t1=$(now)
    ttfb_disk+=("$(subu "$t1" "$t0")")
  done
  ttfb_hwm+=("$(hwm "$dpid")")
  stop_daemon "$dpid" "$sock"
  log "  run $i: mount ${ttfb_fuse[*]: -$TTFB_FILES}; curl ${ttfb_curl[*]: -$TTFB_FILES}"
done

# ---- the table ----------------------------------------------------------------------------
dw=$(med "${disk_warm[@]}") fw=$(med "${fuse_warm[@]}")
dc=$(med "${disk_cold[@]}") fc=$(med "${fuse_cold[@]}")
cc=$(med "${cold_curl[@]}") cc1=$(med "${cold_curl1[@]}") cf=$(med "${cold_fuse[@]}")
fdw=$(med "${find_disk_warm[@]}") fdc=$(med "${find_disk_cold[@]}")
ffw=$(med "${find_fuse_warm[@]}") fff=$(med "${find_fuse_fresh[@]}") ffc=$(med "${find_fuse_cold[@]}")
tf=$(med "${ttfb_fuse[@]}") tc=$(med "${ttfb_curl[@]}") tco=$(med "${ttfb_curl_own[@]}") td=$(med "${ttfb_disk[@]}")
bdw=$(med "${big_disk_warm[@]}") bfw=$(med "${big_fuse_warm[@]}")
maxof() { printf '%s\n' "$@" | sort -g | tail -n 1; }
cat <<TABLE

Mount reads — $(date -u +%Y-%m-%d), $(nproc) cores, load average before the run: $load, median of $RUNS runs (test 4: of $((RUNS * TTFB_FILES)) files)

| # | measurement | baseline (same run) | mount | ratio | goal |
|---|---|---|---|---|---|
| 1 | sequential read, $tree_files files, $tree_bytes bytes, page caches warm | disk: $dw s, $(mib "$tree_bytes" "$dw") MiB/s | $fw s, $(mib "$tree_bytes" "$fw") MiB/s | $(div "$dw" "$fw") | ≥ 0.9 |
| 1 | same, page caches dropped (daemon block cache warm, on disk) | disk: $dc s, $(mib "$tree_bytes" "$dc") MiB/s | $fc s, $(mib "$tree_bytes" "$fc") MiB/s | $(div "$dc" "$fc") | (info) |
| 1 | same, one 1 GiB file (test 2's file, page caches warm) | disk: $bdw s, $(mib "$big_bytes" "$bdw") MiB/s | $bfw s, $(mib "$big_bytes" "$bfw") MiB/s | $(div "$bdw" "$bfw") | (info) |
| 2 | cold read of a 1 GiB file ($nblocks blocks, $stored stored bytes) from a loopback hub, fresh daemon | curl ×$PAR of its blocks: $cc s, $(mib "$big_bytes" "$cc") MiB/s plain, $(mib "$stored" "$cc") MiB/s stored | $cf s, $(mib "$big_bytes" "$cf") MiB/s plain, $(mib "$stored" "$cf") MiB/s stored | $(div "$cc" "$cf") | ≥ 0.8 |
| 2 | same, baseline curl on 1 connection | curl ×1: $cc1 s, $(mib "$stored" "$cc1") MiB/s stored | | $(div "$cc1" "$cf") | (info) |
| 3 | find + stat, $small_entries entries, warm (second walk of the mount) | disk, dentries warm: $fdw s | $ffw s | $(div "$ffw" "$fdw")× time | ≤ 2× |
| 3 | same, fresh mount (flist in page cache) vs disk with caches dropped | disk, caches dropped: $fdc s | $fff s | $(div "$fff" "$fdc")× time | ≤ 2× |
| 3 | same, fresh mount, caches dropped | disk, caches dropped: $fdc s | $ffc s | $(div "$ffc" "$fdc")× time | ≤ 2× |
| 4 | time to first byte, cold 4 KiB read (\`dd\`), fresh daemon | one curl of the first block: $(ms "$tc") ms (curl's own time_total: $(ms "$tco") ms) | $(ms "$tf") ms | $(div "$tf" "$tc")× time | (info) |
| 4 | same, baseline: \`dd\` of the file on disk, warm (dd's own start-up) | $(ms "$td") ms | $(ms "$tf") ms | +$(ms "$(sub "$tf" "$td")") ms | (info) |
| 5 | daemon peak RSS (VmHWM) | | tests 1+3: $warm_hwm MiB; test 2: $(maxof "${cold_hwm[@]}") MiB; test 4: $(maxof "${ttfb_hwm[@]}") MiB | | (info) |

Ratio: tests 1–2, the mount's throughput over the baseline's (baseline time / mount time);
tests 3–4, the mount's time over the baseline's.
(first read of the tree through a fresh mount, every block from the hub: $first_read s, $(mib "$tree_bytes" "$first_read") MiB/s; load average after the run: $(cut -d' ' -f1-3 /proc/loadavg))
TABLE
