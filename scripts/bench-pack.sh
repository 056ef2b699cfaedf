#!/usr/bin/env bash
# make bench (pack): pack throughput on a generated ~1 GiB tree of mixed file sizes, as a
# ratio of times against `tar -c | zstd -T0 -3` of the same tree, measured in the same run.
#
# Both sides read the same tree from a warm page cache and write their output to the same
# disk. pack makes its blocks durable (one syncfs at the end), so the baseline is timed
# twice: as is, and followed by an fsync of its output — the fair comparison.
# Each side runs RUNS times, alternating; the median is reported.
#
#   BENCH_SIZE=1GiB RUNS=3 BENCH_DIR=/var/tmp/zosfs-bench scripts/bench-pack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/zosfs-agent}
SIZE=${BENCH_SIZE:-1GiB}
RUNS=${RUNS:-3}
DIR=${BENCH_DIR:-/var/tmp/zosfs-bench}
for tool in tar zstd; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is needed (apt-get install $tool)" >&2; exit 1; }
done

tree="$DIR/tree-$SIZE"
if [ ! -f "$tree.done" ]; then
  rm -rf "$tree"; mkdir -p "$tree"
  echo "bench: generating a $SIZE tree in $tree" >&2
  go run ./internal/tools/gentree -size "$SIZE" -seed 1 "$tree" >&2
  touch "$tree.done"
fi
# Every run writes to a directory of its own, all removed at the end: on ext4, creating
# files right after deleting many makes inode allocation scan for recently deleted inodes,
# which would charge the previous run's clean-up to the next one.
out="$DIR/out"; rm -rf "$out"; mkdir -p "$out"
trap 'rm -rf "$out"' EXIT

bytes=$(du -sb --apparent-size "$tree" | cut -f1)
files=$(find "$tree" -type f | wc -l)
tar -C "$tree" -cf - . > /dev/null # warm the page cache for both sides

now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a - b}'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

zstd_times=() zstd_sync_times=() pack_times=()
for i in $(seq "$RUNS"); do
  run="$out/$i"; mkdir -p "$run"; sync
  t0=$(now)
  tar -C "$tree" -cf - . | zstd -T0 -3 -q -f -o "$run/tree.tar.zst"
  t1=$(now)
  sync "$run/tree.tar.zst"
  t2=$(now)
  zstd_times+=("$(sub "$t1" "$t0")")
  zstd_sync_times+=("$(sub "$t2" "$t0")")
  zst_size=$(stat -c %s "$run/tree.tar.zst")
  sync
  t0=$(now)
  "$BIN" pack -o "$run/tree.fl" --store "dir://$run/blocks" "$tree" > /dev/null 2> "$run/pack.log"
  t1=$(now)
  pack_times+=("$(sub "$t1" "$t0")")
  stored=$(du -sb --apparent-size "$run/blocks" | cut -f1)
  echo "bench: run $i: tar|zstd ${zstd_times[-1]}s (+fsync ${zstd_sync_times[-1]}s), pack ${pack_times[-1]}s" >&2
done

z=$(printf '%s\n' "${zstd_times[@]}" | median)
zs=$(printf '%s\n' "${zstd_sync_times[@]}" | median)
p=$(printf '%s\n' "${pack_times[@]}" | median)
mib() { div "$(div "$bytes" 1048576)" "$1"; }
cat <<TABLE

Pack throughput — $(date -u +%Y-%m-%d), $(nproc) cores, tree: $files files, $bytes bytes (gentree -size $SIZE -seed 1), median of $RUNS runs

| command | time (s) | MiB/s | output bytes | pack time / this time |
|---|---|---|---|---|
| \`tar -c \| zstd -T0 -3\` | $z | $(mib "$z") | $zst_size | $(div "$p" "$z") |
| \`tar -c \| zstd -T0 -3\` + fsync of its output | $zs | $(mib "$zs") | $zst_size | $(div "$p" "$zs") |
| \`zosfs-agent pack --store dir://\` (blocks synced) | $p | $(mib "$p") | $stored | 1.00 |
TABLE
