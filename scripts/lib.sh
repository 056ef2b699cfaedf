# Shell helpers shared by the scripts (sourced, never run).

# hub_addr LOGFILE: waits, 10 s at most, for the "serving" line a zosfs-agent hub logs once
# it listens, and prints the address it serves on; fails (printing the log) otherwise.
hub_addr() {
  local addr= i
  for i in $(seq 100); do
    addr=$(sed -n 's/.*msg=serving .*addr=\([0-9.:]*\).*/\1/p' "$1" | tail -n 1)
    [ -n "$addr" ] && { echo "$addr"; return 0; }
    sleep 0.1
  done
  echo "the hub did not start:" >&2
  cat "$1" >&2
  return 1
}
