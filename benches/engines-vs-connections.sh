#!/usr/bin/env bash
# How many SMTP connections each destination sees when 1, 2, ... delivery
# engines share one broker queue: the cost that routing by destination
# domain (one engine per domain) would remove.
#
#   benches/engines-vs-connections.sh [DOMAINS] [MESSAGES] [ENGINES...]
#
# DOMAINS (default 8) destinations, each its own `verdant sink` on
# 127.0.0.1; MESSAGES (default 2000) sent through one `verdant receiver` as
# a trickle (one message every 2 ms, recipients spread over the domains, so
# every destination gets a message every few tens of ms: the long tail of
# an outbound sender's domains, not one big one); then, for each count in
# ENGINES (default "1 2"), that many `verdant engine` processes (2 workers
# each) deliver them. Prints the connections and messages per connection
# the sinks saw, and appends the table to benches/runs/. Needs RabbitMQ on this machine; everything runs on
# loopback and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

DOMAINS=${1:-8}
MESSAGES=${2:-2000}
shift 2 2>/dev/null || shift $#
ENGINES=("$@")
[ ${#ENGINES[@]} -gt 0 ] || ENGINES=(1 2)
BASE_PORT=${BASE_PORT:-2700}
die() { echo "engines-vs-connections: $*" >&2; exit 1; }
command -v rabbitmqctl >/dev/null || die "needs RabbitMQ (rabbitmqctl)"
cargo build --release --quiet
verdant=target/release/verdant
work=$(mktemp -d)
prefix="verdant-conn.$$"
pids=()
cleanup() {
  local q
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for q in $(rabbitmqctl list_queues -q --no-table-headers name 2>/dev/null | grep -F "$prefix." || true); do
    rabbitmqctl delete_queue "$q" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # FILE TEXT
  local i
  for i in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  cat "$1" >&2; die "no \"$2\" in $1"
}
# connections and messages accepted by sink I (from its stats file)
sink_stat() {
  awk '/"connections"/ { gsub(/[^0-9]/, ""); c = $0 }
       /"messages_accepted"/ { gsub(/[^0-9]/, ""); m = $0 }
       END { print c + 0, m + 0 }' "$work/sink$1.json" 2>/dev/null || echo "0 0"
}

routes=""
for i in $(seq 0 $((DOMAINS - 1))); do
  "$verdant" sink --listen 127.0.0.1:$((BASE_PORT + i)) --workers 1 --stats-json "$work/sink$i.json" 2>"$work/sink$i.log" &
  pids+=($!)
  wait_for "$work/sink$i.log" "sink listening on"
  routes+="\"d$i.example\" = \"127.0.0.1:$((BASE_PORT + i))\", "
done
printf '[amqp]\nprefix = "%s"\n[delivery]\nlog = "%s"\nroutes = { %s }\n' "$prefix" "${DELIVERY_LOG:-}" "${routes%, }" > "$work/conf.toml"

report=$work/report.md
out="benches/runs/$(date -u +%Y-%m-%d)-engines-vs-connections.md"
{
  echo "## $(date -u +%Y-%m-%dT%H:%MZ) — connections per destination with 1..n engines"
  echo
  echo "Machine: $(nproc) cores, $(uname -r); build $($verdant --version), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
  echo "Command: \`benches/engines-vs-connections.sh $DOMAINS $MESSAGES ${ENGINES[*]}\`: $MESSAGES messages, one every 2 ms," \
       "recipients spread at random over $DOMAINS domains, each its own sink; one receiver; engines of 2 workers," \
       "delivery defaults (at most 100 messages per connection, idle connections kept 5 s)."
  echo
  echo "| engines (2 workers each) | messages | connections | messages per connection |"
  echo "|---|---|---|---|"
} | tee "$report"
rx_port=$((BASE_PORT + DOMAINS))
for n in "${ENGINES[@]}"; do
  "$verdant" receiver --config "$work/conf.toml" --listen 127.0.0.1:$rx_port --workers 1 2>"$work/rx.log" &
  rx=$!; pids+=($rx)
  wait_for "$work/rx.log" "accepting mail"
  declare -a c0=() m0=()
  for i in $(seq 0 $((DOMAINS - 1))); do read -r c0[i] m0[i] < <(sink_stat "$i"); done
  engines=()
  for e in $(seq "$n"); do
    "$verdant" engine --config "$work/conf.toml" --workers 2 2>"$work/engine$e.log" &
    engines+=($!); pids+=($!)
    wait_for "$work/engine$e.log" "delivering from the broker"
  done
  python3 - "$rx_port" "$MESSAGES" "$DOMAINS" <<'PY'
import random, smtplib, sys, time
port, n, domains = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
# Random domains: the broker hands messages to its consumers in turn, and
# `i % domains` would give each consumer domains of its own.
rng = random.Random(7)
s = smtplib.SMTP("127.0.0.1", port)
for i in range(n):
    d = rng.randrange(domains)
    s.sendmail("a@example.com", [f"r{i}@d{d}.example"], f"Subject: {i}\r\n\r\nbody\r\n")
    time.sleep(0.002)
s.quit()
PY
  deadline=$((SECONDS + 60))
  while :; do
    total=0
    for i in $(seq 0 $((DOMAINS - 1))); do read -r c m < <(sink_stat "$i"); total=$((total + m - m0[i])); done
    [ "$total" -ge "$MESSAGES" ] && break
    [ $SECONDS -lt $deadline ] || die "only $total of $MESSAGES delivered"
    sleep 0.5
  done
  sleep 1.5   # the sinks write their stats every second
  conns=0
  for i in $(seq 0 $((DOMAINS - 1))); do read -r c m < <(sink_stat "$i"); conns=$((conns + c - c0[i])); done
  awk -v n="$n" -v m="$MESSAGES" -v c="$conns" 'BEGIN { printf "| %d | %d | %d | %.1f |\n", n, m, c, m / c }' | tee -a "$report"
  kill "$rx" "${engines[@]}" 2>/dev/null || true
  wait "$rx" "${engines[@]}" 2>/dev/null || true
done
echo | tee -a "$report" >/dev/null
cat "$report" >> "$out"
