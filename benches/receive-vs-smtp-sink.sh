#!/usr/bin/env bash
# Receive throughput: Verdant (fsync before every 250) against Postfix's
# smtp-sink (stores nothing: the upper bound), side by side under the same
# smtp-source load, alternating runs so both see the same machine noise.
#
#   [WORKERS=N] benches/receive-vs-smtp-sink.sh [ROUNDS] [MESSAGES]
#
# WORKERS is Verdant's worker count (default: one per core). On a small
# machine the load generator needs a core too; try WORKERS=1 there.
#
# Needs Postfix's tools (Debian: apt-get install postfix) and a release
# build (the script builds it). Everything runs on 127.0.0.1 and stops by
# itself. Prints a Markdown table and appends it to benches/runs/.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
MESSAGES=${2:-20000}
SESSIONS=50
SIZE=4096
VERDANT_PORT=${VERDANT_PORT:-2625}
SINK_PORT=${SINK_PORT:-2626}

command -v smtp-source >/dev/null || { echo "smtp-source not found: apt-get install postfix" >&2; exit 1; }
cargo build --release --quiet
work=$(mktemp -d)
cleanup() { kill "${vpid:-}" "${spid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

WORKERS=${WORKERS:-0}
# Receive only: this measures accepting mail, and delivery would look up
# the recipients' domains in DNS.
printf '[delivery]\nenabled = false\n' > "$work/verdant.toml"
target/release/verdant serve --config "$work/verdant.toml" --workers "$WORKERS" --listen 127.0.0.1:$VERDANT_PORT --spool "$work/spool" 2>"$work/verdant.log" &
vpid=$!
if [ "$(id -u)" = 0 ]; then sink_user=(-u nobody); else sink_user=(); fi
smtp-sink "${sink_user[@]}" 127.0.0.1:$SINK_PORT 1024 &
spid=$!
sleep 1
grep -q "accepting mail" "$work/verdant.log" || { cat "$work/verdant.log"; exit 1; }

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # utime + stime, clock ticks
hz=$(getconf CLK_TCK)

# run PORT PID ARGS...: prints "seconds cpu_seconds"
run() {
  local port=$1 pid=$2; shift 2
  local c0 t0 t1 c1
  c0=$(cpu "$pid"); t0=$(date +%s.%N)
  smtp-source "$@" -s $SESSIONS -l $SIZE -f a@example.com -t b@example.net 127.0.0.1:"$port"
  t1=$(date +%s.%N); c1=$(cpu "$pid")
  echo "$(echo "$t1 - $t0" | bc -l) $(echo "($c1 - $c0) / $hz" | bc -l)"
}

stamp=$(date -u +%Y-%m-%dT%H:%MZ)
out="benches/runs/$(date -u +%Y-%m-%d)-receive-vs-smtp-sink.md"
{
  echo "## $stamp — receive throughput, Verdant vs smtp-sink"
  echo
  echo "Machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)."
  echo "Load: \`smtp-source -s $SESSIONS -l $SIZE [-d] -m N\`, $ROUNDS alternating rounds each."
  echo "Verdant: \`verdant serve --workers $WORKERS\` (0 = one per core), defaults otherwise."
  echo
  echo "| mode | round | Verdant msg/s | smtp-sink msg/s | ratio | Verdant CPU ms/msg | smtp-sink CPU ms/msg |"
  echo "|---|---|---|---|---|---|---|"
} | tee -a "$out"

for mode in reuse new; do
  if [ $mode = reuse ]; then flags=(-d -m "$MESSAGES"); n=$MESSAGES; else flags=(-m $((MESSAGES / 2))); n=$((MESSAGES / 2)); fi
  sum_v=0; sum_s=0
  for r in $(seq "$ROUNDS"); do
    read -r tv cv < <(run $VERDANT_PORT $vpid "${flags[@]}")
    read -r ts cs < <(run $SINK_PORT $spid "${flags[@]}")
    rv=$(echo "$n / $tv" | bc -l); rs=$(echo "$n / $ts" | bc -l)
    sum_v=$(echo "$sum_v + $rv" | bc -l); sum_s=$(echo "$sum_s + $rs" | bc -l)
    printf '| %s | %d | %.0f | %.0f | %.2f | %.3f | %.3f |\n' $mode "$r" "$rv" "$rs" "$(echo "$rv / $rs" | bc -l)" \
      "$(echo "$cv * 1000 / $n" | bc -l)" "$(echo "$cs * 1000 / $n" | bc -l)" | tee -a "$out"
  done
  printf '| %s | mean | %.0f | %.0f | **%.2f** | | |\n' $mode "$(echo "$sum_v / $ROUNDS" | bc -l)" "$(echo "$sum_s / $ROUNDS" | bc -l)" \
    "$(echo "$sum_v / $sum_s" | bc -l)" | tee -a "$out"
done
echo | tee -a "$out"
echo "Verdant: $(grep -c . "$work/verdant.log") log lines; spool $(du -sh "$work/spool" | cut -f1)."
