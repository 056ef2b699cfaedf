#!/usr/bin/env bash
# make bench (site): neighbours and a thin uplink (issue 4's goals), each a ratio against a
# baseline measured in the same run on the same machine:
#
#   A. pull of a 1 GiB flist (2,048 random blocks) by a fresh daemon B from one neighbour A
#      on loopback, the hub stopped, vs curl (8 in parallel) of the same block files from
#      a plain HTTP server (`python3 -m http.server` over the hub's data directory, which
#      has the hub's layout blocks/xx/<id>; the hub itself when there is no python3; the
#      hub is always measured too) — goal: throughput ratio >= 0.9. Information: daemon A's
#      own pull from the hub, and both daemons' peak RSS (VmHWM).
#   B. a site behind a thin uplink: SITE_NODES (5) daemons read the same ~200 MiB flist at
#      the same moment through an uplink shaped with tc tbf (UPLINK_RATE, 100mbit), vs one
#      daemon reading it alone through the same uplink — goal: the last of the 5 finishes
#      in <= 1.3x the time of the one; and the bytes the hub sends for the 5 (the sum of
#      every daemon's `status --json` fetched.hub, and the bytes tc counted on the link)
#      relative to the unique stored bytes of the flist — goal: about 1x.
#
# Part B's network, created by this script and deleted on exit (the host's interfaces and
# routes are never touched): two network namespaces, zb-hub-PID (the hub) and zb-site-PID
# (the site's LAN), joined by one veth pair made inside them (10.200.0.1 <-> 10.200.0.2).
# Both ends' egress is shaped with tbf at UPLINK_RATE: hub -> site is the thin downlink
# that matters, site -> hub carries the requests and ACKs. All daemons of the site share
# the site namespace and talk to each other over its loopback: the LAN is fast, the uplink
# is the only slow link, and no bridge is needed — the simplest topology that keeps the
# one property measured here (every hub byte crosses the shaped link, no neighbour byte
# does). Daemons find each other with --bootstrap (the first daemon's address), not mDNS.
#
# Part B reads through FUSE mounts by default (SITE_READ=mount: `cat` of the file through
# each daemon's mount, 8 blocks of read-ahead) or with `zosfs-agent pull` (SITE_READ=pull:
# 16 blocks in flight). `ip netns exec` gives each daemon a mount namespace of its own, so
# a daemon's FUSE mount is visible only there: the readers enter it with `nsenter -m -t
# PID`, and the mount goes away with the daemon whatever happens to this script.
#
# Part A needs curl and Go (the block-list tool); part B needs root, ip and tc (apt-get
# install iproute2), and for SITE_READ=mount /dev/fuse and nsenter (util-linux); a part
# whose needs are missing is skipped with a message. Everything the script starts (hubs,
# daemons, the HTTP server, readers) is stopped by pid, every mount unmounted, every
# namespace deleted and the run's data (BENCH_DIR/site-run) removed on exit, failure
# included (after a `kill -9` of the script, `ip netns list | grep zb-` shows what is left
# to delete). Inputs are generated once under BENCH_DIR and kept.
#
#   RUNS=3 UPLINK_RATE=100mbit SITE_NODES=5 SITE_READ=mount BENCH_PARTS="a b" scripts/bench-site.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
BIN=${BIN:-bin/zosfs-agent}
RUNS=${RUNS:-3}
DIR=${BENCH_DIR:-/var/tmp/zosfs-bench}
PARTS=${BENCH_PARTS:-a b}
PAR=8                                # curl's parallelism (as bench-mount.sh)
UPLINK_RATE=${UPLINK_RATE:-100mbit}  # tc rate syntax: 100mbit, 20mbit, 1gbit...
UPLINK_BURST=${UPLINK_BURST:-128kb}  # tbf bucket; >= rate / HZ
SITE_NODES=${SITE_NODES:-5}
SITE_SIZE=${SITE_SIZE:-200} # MiB, one file of random bytes
SITE_READ=${SITE_READ:-mount} # mount | pull

log() { echo "bench-site: $*" >&2; }
now() { echo "$EPOCHREALTIME"; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a - b}'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
mib() { awk -v b="$1" -v t="$2" 'BEGIN {printf "%.0f", b / 1048576 / t}'; }
mbit() { awk -v b="$1" -v t="$2" 'BEGIN {printf "%.1f", b * 8 / 1e6 / t}'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
med() { printf '%s\n' "$@" | median; }
maxof() { printf '%s\n' "$@" | sort -g | tail -n 1; }
minof() { printf '%s\n' "$@" | sort -g | head -n 1; }
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz}' "/proc/$1/stat"; } # CPU-s used so far
hwm() { awk '/^VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; } # MiB
# fetched SOCK hub|peers|cache: bytes the daemon obtained from that source (status --json).
fetched() { "$BIN" status --api "$1" --json | sed -n "s/.*\"$2\": \\([0-9][0-9]*\\).*/\\1/p" | head -n 1; }
# npeers SOCK: how many neighbours the daemon is connected to.
npeers() { "$BIN" status --api "$1" --json | grep -c '^ *"id": ' || true; }
# p2paddr SOCK: the daemon's first p2p address (ends in /p2p/<peer id>).
p2paddr() { "$BIN" status --api "$1" --json | sed -n 's/^ *"\(\/ip4\/[^"]*\/p2p\/[^"]*\)".*/\1/p' | head -n 1; }
# Other processes' CPU (the machine is shared): the machine's busy time (user + nice +
# system in /proc/stat) less the CPU of this script and every child it waited for (bash's
# `times`), averaged over the part's wall time, in cores. Approximate: interrupts are left
# out, and kernel threads (writeback, also of this script's daemons) count as others.
# (`times` must run in this shell, not in a $(...) subshell: hence the variable name.)
cpu_mark() { # VAR: sets VAR to "wall-seconds machine-busy-seconds own-seconds"
  local busy
  times > "$work/times"
  busy=$(awk -v hz="$(getconf CLK_TCK)" '/^cpu / {print ($2 + $3 + $4) / hz}' /proc/stat)
  printf -v "$1" '%s %s %s' "$EPOCHREALTIME" "$busy" \
    "$(awk '{for (i = 1; i <= 2; i++) {split($i, a, "m"); s += a[1] * 60 + a[2]}} END {printf "%.2f", s}' "$work/times")"
}
others() { # MARK0 MARK1: other processes' average CPU use between the marks, in cores
  awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " ")
    o = (y[2] - x[2]) - (y[3] - x[3]); if (o < 0) o = 0; printf "%.2f", o / (y[1] - x[1])}'
}
# rate_bps RATE: tc's rate syntax in bits per second (kbit, mbit, gbit, bit; bps = bytes).
rate_bps() {
  awk -v r="$1" 'BEGIN {
    n = r + 0; u = tolower(substr(r, length(n "") + 1))
    m = (u ~ /^k/) ? 1e3 : (u ~ /^m/) ? 1e6 : (u ~ /^g/) ? 1e9 : 1
    if (u ~ /bps$/) m *= 8
    printf "%.0f", n * m }'
}

for tool in curl go; do
  command -v "$tool" >/dev/null || { log "$tool is needed"; exit 1; }
done
[ -x "$BIN" ] || { log "$BIN missing (make build)"; exit 1; }
BIN=$(realpath "$BIN")
run_a=0 run_b=0
case " $PARTS " in *" a "*) run_a=1 ;; esac
case " $PARTS " in *" b "*) run_b=1 ;; esac
if [ "$run_b" = 1 ]; then
  why=
  if [ "$(id -u)" != 0 ]; then why="needs root (network namespaces)"
  elif ! command -v ip >/dev/null || ! command -v tc >/dev/null; then why="needs ip and tc (apt-get install iproute2)"
  elif [ "$SITE_READ" = mount ] && [ ! -e /dev/fuse ]; then why="needs /dev/fuse (or SITE_READ=pull)"
  elif [ "$SITE_READ" = mount ] && ! command -v nsenter >/dev/null; then why="needs nsenter (apt-get install util-linux; or SITE_READ=pull)"
  elif [ "$SITE_READ" != mount ] && [ "$SITE_READ" != pull ]; then why="SITE_READ must be mount or pull"
  fi
  if [ -n "$why" ]; then log "part B (site behind a thin uplink) $why: skipped"; run_b=0; fi
fi
[ "$run_a" = 1 ] || [ "$run_b" = 1 ] || { log "nothing to run"; exit 0; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
t_script=$(now)
log "load average before: $load_before"

# ---- inputs, generated once and kept in BENCH_DIR ----------------------------------------
mkdir -p "$DIR"
big="$DIR/big-1GiB/file" # the same file as bench-mount.sh's test 2
if [ "$run_a" = 1 ] && [ ! -f "$big.done" ]; then
  log "generating a 1 GiB random file in $big"
  rm -rf "$(dirname "$big")"; mkdir -p "$(dirname "$big")"
  head -c 1G /dev/urandom > "$big"
  touch "$big.done"
fi
site="$DIR/site-${SITE_SIZE}MiB/file" # one file of random bytes: stored bytes ~ plain bytes
if [ "$run_b" = 1 ] && [ ! -f "$site.done" ]; then
  log "generating a $SITE_SIZE MiB random file in $site"
  rm -rf "$(dirname "$site")"; mkdir -p "$(dirname "$site")"
  head -c "${SITE_SIZE}M" /dev/urandom > "$site"
  touch "$site.done"
fi
fblocks="$DIR/flistblocks"
if go build -o "$fblocks.site.$$" ./internal/tools/flistblocks; then mv -f "$fblocks.site.$$" "$fblocks"
elif [ -x "$fblocks" ]; then rm -f "$fblocks.site.$$"; log "building flistblocks failed: using the $fblocks there is"
else exit 1; fi

# ---- the run's processes, namespaces and data; all cleaned up on exit -------------------
work="$DIR/site-run"
if [ -e "$work" ]; then
  for f in "$work"/*/pid; do
    [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && { log "$work is in use by another run (pid $(cat "$f")); stop it first"; exit 1; }
  done
fi
rm -rf "$work"; mkdir -p "$work"
pids=() netns=()
declare -A sock_of mnt_of # daemon pid -> its API socket, its mountpoint (part B mounts)
cleanup() {
  set +e
  local pid ns
  for pid in "${!mnt_of[@]}"; do # unmount through the daemon (its own mount namespace)
    timeout 10 "$BIN" umount --api "${sock_of[$pid]}" "${mnt_of[$pid]}" >/dev/null 2>&1
  done
  for pid in "${pids[@]}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  for ns in "${netns[@]}"; do ip netns del "$ns" 2>/dev/null; done # its veth end goes with it
  grep -qs " $work/" /proc/self/mounts && grep -s " $work/" /proc/self/mounts | cut -d' ' -f2 | xargs -r -n1 umount -l
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() { local i; for i in "${!pids[@]}"; do [ "${pids[$i]}" = "$1" ] && pids[i]=; done; return 0; }
stop_pid() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null || true; forget_pid "$1"; }

# start_hub NAME LISTEN [NETNS]: a hub with data in $work/NAME; sets $hub_pid and $hub.
start_hub() {
  local d="$work/$1" addr= pre=()
  [ -n "${3:-}" ] && pre=(ip netns exec "$3")
  mkdir -p "$d"
  [ -f "$work/token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
  "${pre[@]}" "$BIN" hub --data "$d/data" --listen "$2" --token-file "$work/token" 2> "$d/hub.log" &
  hub_pid=$!; pids+=("$hub_pid")
  addr=$(hub_addr "$d/hub.log") || exit 1
  hub="http://$addr"
}
# start_daemon NAME NETNS [DAEMON FLAGS...]: a daemon with an empty data directory, its p2p
# node on (the namespace's) loopback only, without mDNS; sets $sock and $dpid.
start_daemon() {
  local d="$work/$1" pre=()
  [ -n "$2" ] && pre=(ip netns exec "$2")
  shift 2
  rm -rf "$d"; mkdir -p "$d"
  sock="$d/agent.sock"
  "${pre[@]}" "$BIN" daemon --data "$d/data" --api "$sock" --no-mdns --listen /ip4/127.0.0.1/tcp/0 "$@" 2> "$d/daemon.log" &
  dpid=$!; pids+=("$dpid"); echo "$dpid" > "$d/pid"
  sock_of[$dpid]=$sock
  for _ in $(seq 200); do "$BIN" status --api "$sock" >/dev/null 2>&1 && return 0; sleep 0.05; done
  log "the daemon $1 did not start:"; cat "$d/daemon.log" >&2; exit 1
}
stop_daemon() { # PID
  if [ -n "${mnt_of[$1]:-}" ]; then
    "$BIN" umount --api "${sock_of[$1]}" "${mnt_of[$1]}" >/dev/null || log "umount ${mnt_of[$1]} failed"
    unset "mnt_of[$1]"
  fi
  stop_pid "$1"
}
# curl_config BASE IDS OUT: a curl config fetching every block id in IDS from BASE to /dev/null.
curl_config() {
  awk -v h="$1" '{print "url = \"" h "/blocks/" substr($1,1,2) "/" $1 "\""; print "output = \"/dev/null\""}' "$2" > "$3"
}
curlall() { # CONFIG: total bytes downloaded on stdout
  curl -sf --no-progress-meter --parallel --parallel-max "$PAR" -K "$1" -w '%{size_download}\n' | awk '{s += $1} END {print s}'
}

# ==== A. pull from one neighbour on loopback vs curl from a plain HTTP server ===============
if [ "$run_a" = 1 ]; then
  log "A. pull of a 1 GiB flist from one neighbour vs curl x$PAR of the same blocks"
  cpu_mark mark_a0
  start_hub hubA 127.0.0.1:0
  hubA_pid=$hub_pid
  big_cid=$("$BIN" push --hub "$hub" --token-file "$work/token" "$(dirname "$big")" 2> /dev/null | tail -n 1)
  curl -sf "$hub/flists/$big_cid" -o "$work/big.fl"
  "$fblocks" "$work/big.fl" /file | sort -u > "$work/big.ids"
  nblocks=$(wc -l < "$work/big.ids")
  big_bytes=$(stat -c %s "$big")

  # The plain HTTP server: python3's, over the hub's data directory (blocks/xx/<id>).
  py_base=
  if command -v python3 >/dev/null; then
    python3 -u -m http.server --bind 127.0.0.1 --directory "$work/hubA/data" 0 > "$work/http.log" 2>&1 &
    py_pid=$!; pids+=("$py_pid")
    for _ in $(seq 100); do
      port=$(sed -n 's/^Serving HTTP on [0-9.]* port \([0-9]*\).*/\1/p' "$work/http.log")
      [ -n "$port" ] && break; sleep 0.1
    done
    if [ -n "$port" ]; then py_base="http://127.0.0.1:$port"
    else log "python3 -m http.server did not start; the hub is the baseline:"; cat "$work/http.log" >&2; fi
  else
    log "no python3: the hub itself is the plain-HTTP baseline"
  fi
  [ -n "$py_base" ] && curl_config "$py_base" "$work/big.ids" "$work/py.curl"

  # Daemon A: pulls the flist from the hub (timed, as information), then serves it.
  start_daemon nodeA "" --hub "$hub"
  a_pid=$dpid a_sock=$sock
  t0=$(now); "$BIN" pull --api "$a_sock" "$big_cid" > /dev/null 2>&1; t1=$(now)
  a_pull=$(sub "$t1" "$t0")
  a_hub=$(fetched "$a_sock" hub)
  a_addr=$(p2paddr "$a_sock")
  [ -n "$a_addr" ] || { log "daemon A shows no p2p address"; exit 1; }
  log "  daemon A pulled from the hub in ${a_pull}s ($a_hub bytes); its address: $a_addr"

  curl_py=() curl_hub=() pull_b=() b_hwm=() cpu_a=() cpu_b=()
  for i in $(seq "$RUNS"); do
    # Baselines. The hub runs only while curl uses it: it is stopped during B's pull, so
    # that B (no --hub; the flist's route names this hub) can only get blocks from A.
    [ -n "$hubA_pid" ] || { start_hub hubA 127.0.0.1:0; hubA_pid=$hub_pid; }
    curl_config "$hub" "$work/big.ids" "$work/hub.curl"
    [ "$i" = 1 ] && curlall "$work/hub.curl" > /dev/null # block files into the page cache
    sync; t0=$(now); stored=$(curlall "$work/hub.curl"); t1=$(now); curl_hub+=("$(sub "$t1" "$t0")")
    if [ -n "$py_base" ]; then
      sync; t0=$(now); py_stored=$(curlall "$work/py.curl"); t1=$(now); curl_py+=("$(sub "$t1" "$t0")")
      [ "$py_stored" = "$stored" ] || log "  note: curl got $py_stored bytes from python3's server, $stored from the hub"
    fi
    stop_pid "$hubA_pid"; hubA_pid=
    # B: a fresh daemon with an empty data directory, no hub, bootstrapped to A.
    start_daemon "nodeB$i" "" --bootstrap "$a_addr"
    for _ in $(seq 100); do [ "$(npeers "$sock")" -ge 1 ] && break; sleep 0.05; done
    sync; ca0=$(cpu_of "$a_pid"); cb0=$(cpu_of "$dpid")
    t0=$(now); "$BIN" pull --api "$sock" "$big_cid" > /dev/null 2> "$work/pull.err" \
      || { log "B's pull failed:"; cat "$work/pull.err" >&2; exit 1; }; t1=$(now)
    pull_b+=("$(sub "$t1" "$t0")")
    cpu_a+=("$(sub "$(cpu_of "$a_pid")" "$ca0")") cpu_b+=("$(sub "$(cpu_of "$dpid")" "$cb0")")
    b_peers=$(fetched "$sock" peers) b_hubbytes=$(fetched "$sock" hub)
    b_hwm+=("$(hwm "$dpid")")
    stop_daemon "$dpid"
    log "  run $i: curl x$PAR hub ${curl_hub[-1]}s${py_base:+, python3 ${curl_py[-1]}s}; B's pull from A ${pull_b[-1]}s ($b_peers bytes from peers, $b_hubbytes from the hub; CPU-s: A ${cpu_a[-1]}, B ${cpu_b[-1]})"
    [ "$b_hubbytes" = 0 ] || log "  warning: B fetched $b_hubbytes bytes from the hub"
  done
  a_hwm=$(hwm "$a_pid")
  stop_daemon "$a_pid"
  [ -n "$py_base" ] && { stop_pid "$py_pid"; }
  [ "$b_peers" = "$stored" ] || log "  note: B fetched $b_peers bytes from peers, curl $stored"
  cpu_mark mark_a1; others_a=$(others "$mark_a0" "$mark_a1")
  log "  other processes used $others_a cores on average during part A"
fi

# ==== B. a site of SITE_NODES daemons behind a thin uplink ===================================
if [ "$run_b" = 1 ]; then
  log "B. $SITE_NODES daemons behind a $UPLINK_RATE uplink read a $SITE_SIZE MiB flist ($SITE_READ)"
  cpu_mark mark_b0
  ns_hub="zb-hub-$$" ns_site="zb-site-$$"
  ip netns add "$ns_hub"; netns+=("$ns_hub")
  ip netns add "$ns_site"; netns+=("$ns_site")
  # The veth pair is created inside the hub namespace with its peer directly in the site
  # namespace: it never exists in the host's.
  ip -n "$ns_hub" link add up-hub type veth peer name up-site netns "$ns_site"
  ip -n "$ns_hub" addr add 10.200.0.1/30 dev up-hub
  ip -n "$ns_site" addr add 10.200.0.2/30 dev up-site
  for ns in "$ns_hub" "$ns_site"; do ip -n "$ns" link set lo up; done
  ip -n "$ns_hub" link set up-hub up
  ip -n "$ns_site" link set up-site up
  tc -n "$ns_hub" qdisc add dev up-hub root tbf rate "$UPLINK_RATE" burst "$UPLINK_BURST" latency 50ms
  tc -n "$ns_site" qdisc add dev up-site root tbf rate "$UPLINK_RATE" burst "$UPLINK_BURST" latency 50ms
  link_bytes() { tc -n "$ns_hub" -s qdisc show dev up-hub | awk '/Sent/ {print $2; exit}'; } # hub -> site

  start_hub hubB 10.200.0.1:0 "$ns_hub"
  site_cid=$(ip netns exec "$ns_hub" "$BIN" push --hub "$hub" --token-file "$work/token" "$(dirname "$site")" 2> /dev/null | tail -n 1)
  ip netns exec "$ns_hub" curl -sf "$hub/flists/$site_cid" -o "$work/site.fl"
  "$fblocks" "$work/site.fl" /file | sort -u > "$work/site.ids"
  site_blocks=$(wc -l < "$work/site.ids")
  # The unique stored bytes: the sizes of the flist's distinct block files on the hub.
  unique=$(awk -v d="$work/hubB/data/blocks" '{print d "/" substr($1,1,2) "/" $1}' "$work/site.ids" | xargs stat -c %s | awk '{s += $1} END {print s}')
  rate=$(rate_bps "$UPLINK_RATE")
  ideal=$(awk -v b="$unique" -v r="$rate" 'BEGIN {printf "%.3f", b * 8 / r}')
  log "  $site_blocks blocks, $unique stored bytes: ${ideal}s at $UPLINK_RATE"

  # read_start PID SOCK OUT: one node's read, in the background; sets $rpid. Writes the
  # end time ($EPOCHREALTIME) to OUT when done, "fail" when the read failed.
  read_start() {
    if [ "$SITE_READ" = mount ]; then
      ( nsenter -t "$1" -m cat "${mnt_of[$1]}/file" > /dev/null && now > "$3" || echo fail > "$3" ) &
    else
      ( "$BIN" pull --api "$2" "$site_cid" > /dev/null 2>&1 && now > "$3" || echo fail > "$3" ) &
    fi
    rpid=$!; pids+=("$rpid")
  }
  # site_run NAME N: starts N daemons in the site namespace (the first one's address is
  # the others' --bootstrap), mounts the flist on each (mount mode), starts all reads at
  # once and waits for them. Sets: $t_last (start to the last end), $t_first, $hub_sum,
  # $peer_sum, $link (bytes tc counted hub -> site during the reads), $peers_min, $hwm_max.
  site_run() {
    local name=$1 n=$2 k first= d dp=() rp=() t0 t e
    for k in $(seq "$n"); do
      if [ -z "$first" ]; then
        start_daemon "$name-$k" "$ns_site" --hub "$hub"
        first=$(p2paddr "$sock")
      else
        start_daemon "$name-$k" "$ns_site" --hub "$hub" --bootstrap "$first"
      fi
      dp+=("$dpid")
    done
    # Neighbours: wait (10 s at most) until every daemon knows all the others.
    peers_min=0
    if [ "$n" -gt 1 ]; then
      for _ in $(seq 100); do
        peers_min=$(for k in "${dp[@]}"; do npeers "${sock_of[$k]}"; done | sort -g | head -n 1)
        [ "$peers_min" -ge $((n - 1)) ] && break; sleep 0.1
      done
    fi
    if [ "$SITE_READ" = mount ]; then
      for k in "${!dp[@]}"; do
        d="$work/$name-$((k + 1))/mnt"; mkdir -p "$d"
        "$BIN" mount --api "${sock_of[${dp[$k]}]}" "$site_cid" "$d" > /dev/null
        mnt_of[${dp[$k]}]=$d
      done
    fi
    local b0; b0=$(link_bytes)
    sync; t0=$(now)
    for k in "${!dp[@]}"; do read_start "${dp[$k]}" "${sock_of[${dp[$k]}]}" "$work/$name-$((k + 1))/end"; rp+=("$rpid"); done
    for k in "${rp[@]}"; do wait "$k" || true; forget_pid "$k"; done
    link=$(( $(link_bytes) - b0 ))
    t_last=0 t_first=
    for k in $(seq "$n"); do
      e=$(cat "$work/$name-$k/end")
      [ "$e" != fail ] || { log "the read of node $k of $name failed:"; tail -n 5 "$work/$name-$k/daemon.log" >&2; exit 1; }
      t=$(sub "$e" "$t0")
      t_last=$(maxof "$t_last" "$t"); t_first=$(minof ${t_first:+"$t_first"} "$t")
    done
    hub_sum=0 peer_sum=0 hwm_max=0
    for k in "${dp[@]}"; do
      hub_sum=$((hub_sum + $(fetched "${sock_of[$k]}" hub)))
      peer_sum=$((peer_sum + $(fetched "${sock_of[$k]}" peers)))
      hwm_max=$(maxof "$hwm_max" "$(hwm "$k")")
    done
    for k in "${dp[@]}"; do stop_daemon "$k"; done
  }

  one_t=() one_hub=() one_link=() many_t=() many_first=() many_hub=() many_peers=() many_link=() many_pmin=() site_hwm=()
  for i in $(seq "$RUNS"); do
    site_run "one$i" 1
    one_t+=("$t_last") one_hub+=("$hub_sum") one_link+=("$link")
    site_run "many$i" "$SITE_NODES"
    many_t+=("$t_last") many_first+=("$t_first") many_hub+=("$hub_sum") many_peers+=("$peer_sum") many_link+=("$link") many_pmin+=("$peers_min")
    site_hwm+=("$hwm_max")
    log "  run $i: 1 node ${one_t[-1]}s (hub ${one_hub[-1]} bytes, link ${one_link[-1]});" \
      "$SITE_NODES nodes: first ${t_first}s, last ${t_last}s (hub $hub_sum bytes, peers $peer_sum, link $link; each daemon saw >= $peers_min neighbours)"
  done
  cpu_mark mark_b1; others_b=$(others "$mark_b0" "$mark_b1")
  log "  other processes used $others_b cores on average during part B"
fi

# ---- the table ----------------------------------------------------------------------------
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(sub "$(now)" "$t_script")
echo
echo "Site — $(date -u +%Y-%m-%d), $(nproc) cores, median of $RUNS runs; load average before: $load_before, after: $load_after; the script took ${elapsed}s"
echo "Other processes' CPU, on average (cores):${others_a:+ part A $others_a}${others_b:+ part B $others_b} (of $(nproc))"
echo
echo "| # | measurement | baseline (same run) | zosfs-agent | ratio | goal |"
echo "|---|---|---|---|---|---|"
if [ "$run_a" = 1 ]; then
  ch=$(med "${curl_hub[@]}") pb=$(med "${pull_b[@]}")
  if [ -n "$py_base" ]; then
    cp=$(med "${curl_py[@]}")
    echo "| A | pull of a 1 GiB flist ($nblocks blocks, $stored stored bytes) from one neighbour on loopback, fresh daemon, hub stopped | curl ×$PAR from \`python3 -m http.server\`: $cp s, $(mib "$stored" "$cp") MiB/s | $pb s, $(mib "$stored" "$pb") MiB/s | $(div "$cp" "$pb") | ≥ 0.9 |"
    echo "| A | same, baseline: curl ×$PAR from the hub | $ch s, $(mib "$stored" "$ch") MiB/s | | $(div "$ch" "$pb") | (info) |"
  else
    echo "| A | pull of a 1 GiB flist ($nblocks blocks, $stored stored bytes) from one neighbour on loopback, fresh daemon, hub stopped | curl ×$PAR from the hub (no python3): $ch s, $(mib "$stored" "$ch") MiB/s | $pb s, $(mib "$stored" "$pb") MiB/s | $(div "$ch" "$pb") | ≥ 0.9 |"
  fi
  echo "| A | daemon A's own pull of it from the loopback hub (once) | curl ×$PAR from the hub: $ch s | $a_pull s, $(mib "$a_hub" "$a_pull") MiB/s | $(div "$ch" "$a_pull") | (info) |"
  echo "| A | CPU during B's pull from A (the machine has $(nproc) cores × $pb s) | | A (serving): $(med "${cpu_a[@]}") CPU-s, B (fetching): $(med "${cpu_b[@]}") CPU-s | | (info) |"
  echo "| A | daemon peak RSS (VmHWM) | | A (pulled, then served $RUNS times): $a_hwm MiB; B: $(maxof "${b_hwm[@]}") MiB | | (info) |"
fi
if [ "$run_b" = 1 ]; then
  ot=$(med "${one_t[@]}") mt=$(med "${many_t[@]}") mf=$(med "${many_first[@]}")
  oh=$(med "${one_hub[@]}") mh=$(med "${many_hub[@]}") mp=$(med "${many_peers[@]}")
  ol=$(med "${one_link[@]}") ml=$(med "${many_link[@]}")
  how=$([ "$SITE_READ" = mount ] && echo "\`cat\` through a mount" || echo "\`pull\`")
  echo "| B | $SITE_NODES nodes read a $SITE_SIZE MiB flist ($site_blocks blocks, $unique stored bytes) at once through a $UPLINK_RATE uplink ($how): time until the last finishes | 1 node alone: $ot s, $(mbit "$unique" "$ot") Mbit/s (the link alone: $ideal s) | last: $mt s (first: $mf s) | $(div "$mt" "$ot")× time | ≤ 1.3× |"
  echo "| B | hub bytes for the $SITE_NODES nodes (sum of fetched.hub) / unique stored bytes | 1 node: $(div "$oh" "$unique")× | $mh bytes (from neighbours: $mp) | $(div "$mh" "$unique")× | ≈ 1× |"
  echo "| B | same, bytes tc sent on the hub → site link (with TCP/IP headers) / unique stored bytes | 1 node: $(div "$ol" "$unique")× | $ml bytes | $(div "$ml" "$unique")× | (info) |"
  echo "| B | daemon peak RSS (VmHWM), largest of the $SITE_NODES | | $(maxof "${site_hwm[@]}") MiB | | (info) |"
fi
echo
echo "Ratio: A, the daemon's throughput over the baseline's (baseline time / pull time); B, the"
echo "5 nodes' time over the one node's, and bytes over the flist's unique stored bytes."
