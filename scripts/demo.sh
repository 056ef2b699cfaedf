#!/usr/bin/env bash
# make demo: pack a real tree (the Go toolchain's own source, present wherever Go is) into
# an flist with a local block store, inspect it, list it, and read a file back through
# the store, checking it byte for byte. Everything happens in a temporary directory that
# is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/zosfs-agent}
SRC=${DEMO_SOURCE:-$(go env GOROOT)/src}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== pack $SRC (blocks into dir://$work/store)"
cid=$("$BIN" pack -o "$work/go-src.fl" --store "dir://$work/store" --tag demo=go-src "$SRC" | tail -n 1)
echo "   CID $cid"

echo "== pack again: every block is already in the store, nothing is written, same CID"
cid2=$("$BIN" pack -o "$work/again.fl" --store "dir://$work/store" --tag demo=go-src "$SRC" | tail -n 1)
[ "$cid" = "$cid2" ] && echo "   same CID: $cid2" || { echo "   CIDs differ: $cid2" >&2; exit 1; }

echo "== inspect"
"$BIN" inspect "$work/go-src.fl"

"$BIN" manifest "$work/go-src.fl" > "$work/manifest.tsv"
echo "== manifest (the first 5 of $(wc -l < "$work/manifest.tsv") lines)"
sed -n 1,5p "$work/manifest.tsv"

file=net/http/server.go
echo "== cat /$file through the store, compared with the original"
"$BIN" cat "$work/go-src.fl" "/$file" > "$work/out"
cmp "$work/out" "$SRC/$file" && echo "   identical: $(wc -c < "$work/out") bytes"
