#!/usr/bin/env bash
# Relay throughput end to end: smtp-source → MTA → sink, for several MTA
# set-ups side by side on the same machine, in alternating rounds so that
# all see the same machine noise.
#
#   [VARIANTS="embedded amqp:64 postfix"] [WORKERS=N] [DELIVERY_LOG=1|0] \
#   [MODES="reuse new"] \
#     benches/relay-vs-postfix.sh [ROUNDS] [MESSAGES] [POSTFIX_MESSAGES]
#
# VARIANTS (default "embedded postfix"), each run in every round:
#   embedded        `verdant serve` on its embedded spool, metrics on (its
#                   /metrics served, CPU accounting running);
#   embedded-nometrics  the same with `metrics.enabled = false`: what
#                   measuring costs;
#   amqp[:B[:W]]    `verdant receiver` and `verdant engine`, two processes
#                   meeting in the RabbitMQ broker of this machine
#                   (amqp://guest:guest@127.0.0.1:5672, queues of their own,
#                   deleted at the end), publishing in batches of at most B
#                   messages (amqp.batch_max, default 64) gathered for up to
#                   W (amqp.batch_window, default 2ms);
#   postfix         a private Postfix instance (see below).
# MESSAGES (default 10000) go through each Verdant variant per round,
# POSTFIX_MESSAGES (default MESSAGES/5: Postfix is much slower) through
# Postfix; rates are computed per each one's own count. With connections not
# reused ("new"), both counts are halved. WORKERS is the worker count of
# every Verdant process (default: one per core). DELIVERY_LOG=1 (default)
# keeps Verdant's JSON delivery log, as Postfix logs every delivery too (to
# a file, through its postlogd); DELIVERY_LOG=0 turns it off.
#
# Time is measured from the start of smtp-source until the variant's sink
# (`verdant sink`, one per variant) has accepted every message of the round:
# the end is the sink's own timestamp of the last message. CPU is utime +
# stime of every process of the MTA, not of smtp-source or the sink: for
# Postfix the master, the children it reaped and those alive; for an amqp
# variant the receiver, the engine *and the broker* (RabbitMQ's beam.smp,
# all of its CPU during the round, so idle work of the broker is counted
# too).
#
# Needs root (Postfix's master binds and changes users), Debian's postfix
# package (apt-get install postfix) for smtp-source and Postfix itself, and,
# for amqp variants, RabbitMQ running on this machine with rabbitmqctl. The
# system's Postfix is neither used nor touched: the instance here has its
# own config, queue and data directories in a temporary directory, listens
# on 127.0.0.1 only and does no DNS. Everything stops by itself, within
# TIMEOUT seconds (default 300) per round. Prints a Markdown table and, once
# every round is done, appends it to benches/runs/.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
MESSAGES=${2:-10000}
PF_MESSAGES=${3:-$((MESSAGES / 5))}
VARIANTS=${VARIANTS:-embedded postfix}
MODES=${MODES:-reuse new}
WORKERS=${WORKERS:-0}
DELIVERY_LOG=${DELIVERY_LOG:-1}
SESSIONS=50
SIZE=4096
WARMUP=200                 # messages through each MTA before measuring
TIMEOUT=${TIMEOUT:-300}    # seconds a round may take before the script gives up
BASE_PORT=${BASE_PORT:-2640}   # variant i: MTA on BASE_PORT+2i, its sink on +2i+1

die() { echo "relay-vs-postfix: $*" >&2; exit 1; }
for v in "$ROUNDS" "$MESSAGES" "$PF_MESSAGES" "$TIMEOUT" "$BASE_PORT"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || die "not a positive count: $v"
done
for mode in $MODES; do [ "$mode" = reuse ] || [ "$mode" = new ] || die "unknown mode $mode (reuse or new)"; done
read -r -a variants <<< "$VARIANTS"
[ ${#variants[@]} -gt 0 ] || die "no VARIANTS"
postfix_wanted=0 amqp_wanted=0
for v in "${variants[@]}"; do
  case $v in
    embedded|embedded-nometrics) ;;
    postfix) postfix_wanted=1 ;;
    amqp|amqp:[1-9]*) amqp_wanted=1
      [[ $v =~ ^amqp(:[1-9][0-9]*(:[0-9]+(us|ms|s))?)?$ ]] || die "bad variant $v (amqp:BATCH[:WINDOW], e.g. amqp:64:2ms)" ;;
    *) die "unknown variant $v (embedded, embedded-nometrics, amqp[:BATCH[:WINDOW]], postfix)" ;;
  esac
done
command -v smtp-source >/dev/null || die "smtp-source not found: apt-get install postfix"
if [ $postfix_wanted = 1 ]; then
  command -v postconf >/dev/null && [ -x /usr/sbin/postfix ] || die "Postfix not found: apt-get install postfix"
  [ "$(id -u)" = 0 ] || die "needs root: Postfix's master binds its port and runs its daemons as the postfix user"
  getent passwd postfix >/dev/null && getent group postdrop >/dev/null || die "no postfix user or postdrop group (Debian's package creates them)"
fi
if [ $amqp_wanted = 1 ]; then
  command -v rabbitmqctl >/dev/null || die "rabbitmqctl not found: the amqp variants need RabbitMQ on this machine"
  broker_pid=$(pgrep -x beam.smp | head -n 1) || die "RabbitMQ is not running (rabbitmq-server -detached)"
fi
for i in "${!variants[@]}"; do
  for port in $((BASE_PORT + 2 * i)) $((BASE_PORT + 2 * i + 1)) $((BASE_PORT + 100 + 2 * i)) $((BASE_PORT + 100 + 2 * i + 1)); do
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then die "port $port is in use (set BASE_PORT)"; fi
  done
done

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
cargo build --release --quiet
verdant=target/release/verdant

work=$(mktemp -d)
chmod 755 "$work"          # Postfix's daemons run as the postfix user
pfconf=$work/postfix-conf
pfqueue=$work/postfix-queue
pfdata=$work/postfix-data
prefix="verdant-bench.$$"  # the amqp variants' queues: $prefix.$i.v2.*
declare -A pids=()         # variant index → its Verdant processes
declare -A sinks=()        # variant index → its sink's pid

# The pid of our Postfix master, if it is running.
pf_master_pid() {
  local pid
  pid=$(awk 'NR == 1 { print $1 }' "$pfqueue/pid/master.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = master ] || return 1
  echo "$pid"
}

cleanup() {
  local rc=$? pid i q
  trap - EXIT INT TERM
  if [ $postfix_wanted = 1 ] && pid=$(pf_master_pid); then
    postfix -c "$pfconf" stop >/dev/null 2>&1 || true
    for i in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    # Stragglers: the master leads its own session and process group.
    if [ -d "/proc/$pid" ]; then kill -9 -- "-$pid" 2>/dev/null || true; fi
  fi
  local all="${pids[*]:-} ${sinks[*]:-}"
  for pid in $all; do kill "$pid" 2>/dev/null || true; done
  for pid in $all; do
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ $amqp_wanted = 1 ]; then
    for q in $(rabbitmqctl list_queues -q --no-table-headers name 2>/dev/null | grep -F "$prefix." || true); do
      rabbitmqctl delete_queue "$q" >/dev/null 2>&1 || true
    done
  fi
  if [ $rc != 0 ] && [ -f "$work/postfix.log" ]; then
    echo "--- last lines of Postfix's log:" >&2; tail -20 "$work/postfix.log" >&2
  fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for FILE TEXT: until FILE contains TEXT, at most 10 s.
wait_for() {
  local i
  for i in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "--- $1:" >&2; cat "$1" >&2 || true
  die "no \"$2\" in $1 after 10 s"
}

port_of() { echo $((BASE_PORT + 2 * $1)); }
metrics_port_of() { echo $((BASE_PORT + 100 + 2 * $1 + ${2:-0})); }  # INDEX [0|1]
sink_port_of() { echo $((BASE_PORT + 2 * $1 + 1)); }

# --- sinks: one per variant, so each counts only its own MTA's deliveries.
for i in "${!variants[@]}"; do
  "$verdant" sink --listen 127.0.0.1:"$(sink_port_of "$i")" --workers 1 --stats-json "$work/sink$i.json" 2>"$work/sink$i.log" &
  sinks[$i]=$!
  wait_for "$work/sink$i.log" "sink listening on"
done

if [ "$DELIVERY_LOG" = 1 ]; then log_of() { echo "$work/delivery$1.log"; }; else log_of() { echo ""; }; fi

start_embedded() { # INDEX VARIANT
  local i=$1
  {
    printf '[delivery]\nlog = "%s"\n' "$(log_of "$i")"
    if [ "$2" = embedded-nometrics ]; then printf '[metrics]\nenabled = false\n'; fi
  } > "$work/verdant$i.toml"
  "$verdant" serve --config "$work/verdant$i.toml" --workers "$WORKERS" --listen 127.0.0.1:"$(port_of "$i")" \
    --metrics-listen 127.0.0.1:"$(metrics_port_of "$i")" \
    --spool "$work/spool$i" --route "*=127.0.0.1:$(sink_port_of "$i")" 2>"$work/verdant$i.log" &
  pids[$i]=$!
  wait_for "$work/verdant$i.log" "accepting mail"
}

start_amqp() { # INDEX VARIANT
  local i=$1 batch window
  IFS=: read -r _ batch window <<< "$2"
  {
    printf '[amqp]\nprefix = "%s.%d"\nbatch_max = %d\nbatch_window = "%s"\n' "$prefix" "$i" "${batch:-64}" "${window:-2ms}"
    printf '[delivery]\nlog = "%s"\n' "$(log_of "$i")"
  } > "$work/amqp$i.toml"
  "$verdant" receiver --config "$work/amqp$i.toml" --workers "$WORKERS" --listen 127.0.0.1:"$(port_of "$i")" \
    --metrics-listen 127.0.0.1:"$(metrics_port_of "$i")" 2>"$work/receiver$i.log" &
  pids[$i]=$!
  "$verdant" engine --config "$work/amqp$i.toml" --workers "$WORKERS" --route "*=127.0.0.1:$(sink_port_of "$i")" \
    --metrics-listen 127.0.0.1:"$(metrics_port_of "$i" 1)" 2>"$work/engine$i.log" &
  pids[$i]="${pids[$i]} $!"
  wait_for "$work/receiver$i.log" "connected to the broker"
  wait_for "$work/engine$i.log" "connected to the broker"
}

# --- Postfix: a private instance. Minimal main.cf, Debian's master.cf with
# the smtpd listener moved to 127.0.0.1:PORT; defaults otherwise.
start_postfix() { # INDEX
  local i=$1
  mkdir -p "$pfconf" "$pfqueue"   # data_directory is created by `postfix check`, owned by postfix
  cp /etc/postfix/master.cf "$pfconf/"
  printf 'compatibility_level = 3.6\n' > "$pfconf/main.cf"
  postconf -c "$pfconf" -e \
    "queue_directory = $pfqueue" \
    "data_directory = $pfdata" \
    "inet_interfaces = 127.0.0.1" \
    "inet_protocols = ipv4" \
    "myhostname = bench.localdomain" \
    "mydestination =" \
    "mynetworks = 127.0.0.0/8" \
    "relayhost = [127.0.0.1]:$(sink_port_of "$i")" \
    "smtp_dns_support_level = disabled" \
    "alias_maps =" \
    "alias_database =" \
    "maillog_file_prefixes = $work" \
    "maillog_file = $work/postfix.log"
  # No chroot: the temporary queue directory has none of the files (resolv.conf,
  # localtime, ...) Debian copies into /var/spool/postfix for it.
  postconf -c "$pfconf" -F '*/*/chroot = n'
  postconf -c "$pfconf" -M# smtp/inet
  postconf -c "$pfconf" -M "127.0.0.1:$(port_of "$i")/inet = 127.0.0.1:$(port_of "$i") inet n - n - - smtpd"
  postfix -c "$pfconf" check || die "postfix check failed (see above or $work/postfix.log)"
  postfix -c "$pfconf" start >/dev/null 2>&1 || die "postfix start failed"
  pfmaster=$(pf_master_pid) || die "Postfix's master is not running"
}

for i in "${!variants[@]}"; do
  case ${variants[$i]} in
    embedded*) start_embedded "$i" "${variants[$i]}" ;;
    amqp*) start_amqp "$i" "${variants[$i]}" ;;
    postfix) start_postfix "$i" ;;
  esac
done

# --- measuring
hz=$(getconf CLK_TCK)
# utime + stime + cutime + cstime of one process, in clock ticks. The comm
# field may hold spaces: count fields from the closing parenthesis.
proc_cpu() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 + $14 + $15 }'; }
# Postfix: the master with the children it reaped, plus its live descendants.
postfix_cpu() {
  local total
  # cat, not awk on the files: a process may exit while they are read.
  total=$(cat /proc/[0-9]*/stat 2>/dev/null | awk -v m="$pfmaster" '
    { pid = $1; line = $0; sub(/^.*\) /, "", line); split(line, f, " ")
      ppid[pid] = f[2]; own[pid] = f[12] + f[13]; reaped[pid] = f[14] + f[15] }
    END {
      if (!(m in own)) exit 1
      total = own[m] + reaped[m]
      for (pid in ppid) {
        if (pid == m) continue
        for (a = ppid[pid]; a > 1 && a != m && (a in ppid); a = ppid[a]) {}
        if (a == m) total += own[pid]
      }
      print total
    }') || true
  [ -n "$total" ] || die "cannot read the CPU times of Postfix's processes"
  echo "$total"
}
# variant_cpu INDEX: the CPU ticks of every process of variant INDEX.
variant_cpu() {
  local i=$1 pid total=0
  case ${variants[$i]} in
    postfix) postfix_cpu; return ;;
    amqp*) total=$(proc_cpu "$broker_pid") ;;
  esac
  for pid in ${pids[$i]}; do total=$((total + $(proc_cpu "$pid"))); done
  echo "$total"
}

# sink_stat INDEX: prints "messages_accepted last_accepted_at_us" from the
# variant's sink's stats file (written atomically every second).
sink_stat() {
  awk '/"messages_accepted"/ { gsub(/[^0-9]/, ""); n = $0 }
       /"last_accepted_at"/  { gsub(/[^0-9]/, ""); t = $0 }
       END { print n + 0, t + 0 }' "$work/sink$1.json" 2>/dev/null || echo "0 0"
}

# run INDEX N FLAGS...: sends N messages through variant INDEX, waits until
# its sink has them all; prints "seconds cpu_seconds smtp_source_rc".
run() {
  local i=$1 n=$2 c0 count last t0 cpu0 cpu1 rc deadline
  shift 2
  read -r c0 _ < <(sink_stat "$i")
  cpu0=$(variant_cpu "$i")
  t0=$(date +%s%6N)
  rc=0
  timeout "$TIMEOUT" smtp-source "$@" -m "$n" -s $SESSIONS -l $SIZE -f a@example.com -t b@example.net \
    127.0.0.1:"$(port_of "$i")" >/dev/null || rc=$?
  deadline=$((t0 + TIMEOUT * 1000000))
  while :; do
    read -r count last < <(sink_stat "$i")
    [ "$count" -ge $((c0 + n)) ] && break
    [ "$(date +%s%6N)" -lt $deadline ] || die "${variants[$i]}: the sink got $((count - c0)) of $n messages in ${TIMEOUT}s (smtp-source exit $rc)"
    sleep 0.2
  done
  cpu1=$(variant_cpu "$i")
  [ "$count" -eq $((c0 + n)) ] || echo "relay-vs-postfix: ${variants[$i]}: the sink got $((count - c0)) messages for $n sent" >&2
  awk -v t0="$t0" -v t1="$last" -v c0="$cpu0" -v c1="$cpu1" -v hz="$hz" -v rc="$rc" \
    'BEGIN { printf "%.6f %.4f %d\n", (t1 - t0) / 1e6, (c1 - c0) / hz, rc }'
}

count_of() { # INDEX MODE
  local n=$MESSAGES
  [ "${variants[$1]}" = postfix ] && n=$PF_MESSAGES
  [ "$2" = new ] && n=$(((n + 1) / 2))
  echo "$n"
}

for i in "${!variants[@]}"; do run "$i" $WARMUP -d >/dev/null; done

describe() { # VARIANT: how it was run, for the report
  local batch window
  case $1 in
    embedded) echo "\`verdant serve --workers $WORKERS --route '*=127.0.0.1:SINK'\`, fresh spool, metrics on" ;;
    embedded-nometrics) echo "as embedded, with metrics.enabled = false" ;;
    amqp*) IFS=: read -r _ batch window <<< "$1"
      echo "\`verdant receiver\` + \`verdant engine --route '*=127.0.0.1:SINK'\` (--workers $WORKERS each) through RabbitMQ $(rabbitmqctl version 2>/dev/null), classic queues, amqp.batch_max = ${batch:-64}, amqp.batch_window = ${window:-2ms}; CPU includes the broker" ;;
    postfix) echo "private instance (own config, queue and data directories), Postfix defaults" \
       "(default_process_limit = $(postconf -c "$pfconf" -h default_process_limit)," \
       "default_destination_concurrency_limit = $(postconf -c "$pfconf" -h default_destination_concurrency_limit))" \
       "except: $(postconf -c "$pfconf" -n | grep -v -e _directory -e maillog_file_prefixes | sed "s/ = /=/; s/ =\$/=/; s|$work|TMP|" | paste -sd, | sed 's/,/, /g');" \
       "chroot off; smtpd on 127.0.0.1:PORT; log to a file through postlogd" ;;
  esac
}

stamp=$(date -u +%Y-%m-%dT%H:%MZ)
out="benches/runs/$(date -u +%Y-%m-%d)-relay-vs-postfix.md"
report=$work/report.md       # appended to $out only once every round is done
{
  echo "## $stamp — relay throughput end to end: ${variants[*]}"
  echo
  echo "Machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
       "load average before the rounds: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Build: $($verdant --version), commit $commit$([ $postfix_wanted = 1 ] && echo "; Postfix $(postconf -c "$pfconf" -h mail_version)")."
  echo "Command: \`VARIANTS=\"${variants[*]}\" WORKERS=$WORKERS DELIVERY_LOG=$DELIVERY_LOG MODES=\"$MODES\" benches/relay-vs-postfix.sh $ROUNDS $MESSAGES $PF_MESSAGES\`."
  echo "Load: \`smtp-source -s $SESSIONS -l $SIZE [-d] -m N -f a@example.com -t b@example.net\`," \
       "$ROUNDS alternating rounds per mode after $WARMUP warm-up messages each;" \
       "N = $MESSAGES for Verdant and $PF_MESSAGES for Postfix with \`-d\` (connections reused), half that without."
  echo "Sinks: \`verdant sink --workers 1\`, one per variant. Time: from the start of smtp-source to the sink's" \
       "timestamp of the round's last message. CPU: every process of the MTA, not smtp-source or the sink." \
       "Verdant's delivery log $([ "$DELIVERY_LOG" = 1 ] && echo on || echo off)."
  for v in "${variants[@]}"; do echo "- $v: $(describe "$v")."; done
  echo
  echo "| mode | variant | msg/s by round | mean msg/s | × Postfix | CPU ms/msg by round | mean CPU ms/msg | Postfix CPU ÷ this |"
  echo "|---|---|---|---|---|---|---|---|"
} | tee -a "$report"

f() { awk "BEGIN { printf \"$1\", $2 }"; }
for mode in $MODES; do
  case $mode in reuse) flags=(-d) ;; new) flags=() ;; esac
  declare -A rates=() cpus=() sum_rate=() sum_cpu=()
  for r in $(seq "$ROUNDS"); do
    for i in "${!variants[@]}"; do
      n=$(count_of "$i" "$mode")
      res=$(run "$i" "$n" ${flags[@]+"${flags[@]}"}); read -r t c s <<< "$res"
      [ "$s" = 0 ] || echo "relay-vs-postfix: ${variants[$i]}: smtp-source exit $s" >&2
      rate=$(f %.3f "$n / $t"); ms=$(f %.5f "$c * 1000 / $n")
      rates[$i]="${rates[$i]:-}${rates[$i]:+ / }$(f %.0f "$rate")"
      cpus[$i]="${cpus[$i]:-}${cpus[$i]:+ / }$(f %.3f "$ms")"
      sum_rate[$i]=$(f %.3f "${sum_rate[$i]:-0} + $rate")
      sum_cpu[$i]=$(f %.5f "${sum_cpu[$i]:-0} + $ms")
    done
  done
  pf=""
  for i in "${!variants[@]}"; do [ "${variants[$i]}" = postfix ] && pf=$i; done
  for i in "${!variants[@]}"; do
    mean_rate=$(f %.3f "${sum_rate[$i]} / $ROUNDS"); mean_cpu=$(f %.5f "${sum_cpu[$i]} / $ROUNDS")
    if [ -n "$pf" ]; then
      x=$(f %.1f "${sum_rate[$i]} / ${sum_rate[$pf]}"); y=$(f %.1f "${sum_cpu[$pf]} / ${sum_cpu[$i]}")
    else
      x="–"; y="–"
    fi
    printf '| %s | %s | %s | %.0f | **%s** | %s | %.3f | **%s** |\n' "$mode" "${variants[$i]}" "${rates[$i]}" \
      "$mean_rate" "$x" "${cpus[$i]}" "$mean_cpu" "$y" | tee -a "$report"
  done
  unset rates cpus sum_rate sum_cpu
done
echo | tee -a "$report"
cat "$report" >> "$out"
if [ $postfix_wanted = 1 ]; then
  echo "Postfix queue left: $(find "$pfqueue"/{incoming,active,deferred,hold,corrupt} -type f 2>/dev/null | wc -l) files;" \
       "Postfix log: $(grep -c 'status=sent' "$work/postfix.log" || true) sent, $(grep -c 'status=deferred' "$work/postfix.log" || true) deferred." >&2
fi
if [ $amqp_wanted = 1 ]; then
  echo "Broker queues left:" >&2
  rabbitmqctl list_queues -q --no-table-headers name messages_ready messages_unacknowledged 2>/dev/null | grep -F "$prefix." >&2 || true
fi
