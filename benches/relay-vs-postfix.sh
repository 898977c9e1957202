#!/usr/bin/env bash
# Relay throughput end to end: smtp-source → MTA → sink, Verdant against a
# private Postfix instance relaying to the same kind of sink on the same
# machine, alternating rounds so both see the same machine noise.
#
#   [WORKERS=N] [DELIVERY_LOG=1|0] [MODES="reuse new"] \
#     benches/relay-vs-postfix.sh [ROUNDS] [MESSAGES] [POSTFIX_MESSAGES]
#
# MESSAGES (default 10000) go through Verdant per round, POSTFIX_MESSAGES
# (default MESSAGES/5: Postfix is much slower) through Postfix; rates are
# computed per each one's own count. With connections not reused ("new"),
# both counts are halved. WORKERS is Verdant's worker count (default: one
# per core). DELIVERY_LOG=1 (default) keeps Verdant's JSON delivery log,
# as Postfix logs every delivery too (to a file, through its postlogd);
# DELIVERY_LOG=0 turns it off.
#
# Time is measured from the start of smtp-source until the sink (`verdant
# sink`, one per MTA) has accepted every message of the round: the end is the
# sink's own timestamp of the last message. CPU is utime+stime of every
# process of the MTA (for Postfix: the master, the children it reaped and
# those alive), not of smtp-source or the sink.
#
# Needs root (Postfix's master binds and changes users) and Debian's postfix
# package (apt-get install postfix) for smtp-source and Postfix itself; the
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
MODES=${MODES:-reuse new}
WORKERS=${WORKERS:-0}
DELIVERY_LOG=${DELIVERY_LOG:-1}
SESSIONS=50
SIZE=4096
WARMUP=200                 # messages through each MTA before measuring
TIMEOUT=${TIMEOUT:-300}    # seconds a round may take before the script gives up
VERDANT_PORT=${VERDANT_PORT:-2635}
VSINK_PORT=${VSINK_PORT:-2636}
POSTFIX_PORT=${POSTFIX_PORT:-2637}
PSINK_PORT=${PSINK_PORT:-2638}

die() { echo "relay-vs-postfix: $*" >&2; exit 1; }
for v in "$ROUNDS" "$MESSAGES" "$PF_MESSAGES" "$TIMEOUT"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || die "not a positive count: $v"
done
for mode in $MODES; do [ "$mode" = reuse ] || [ "$mode" = new ] || die "unknown mode $mode (reuse or new)"; done
command -v smtp-source >/dev/null || die "smtp-source not found: apt-get install postfix"
command -v postconf >/dev/null && [ -x /usr/sbin/postfix ] || die "Postfix not found: apt-get install postfix"
[ "$(id -u)" = 0 ] || die "needs root: Postfix's master binds its port and runs its daemons as the postfix user"
getent passwd postfix >/dev/null && getent group postdrop >/dev/null || die "no postfix user or postdrop group (Debian's package creates them)"

for port in $VERDANT_PORT $VSINK_PORT $POSTFIX_PORT $PSINK_PORT; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then die "port $port is in use (set VERDANT_PORT, VSINK_PORT, POSTFIX_PORT, PSINK_PORT)"; fi
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
pfmaster=""

# The pid of our Postfix master, if it is running.
pf_master_pid() {
  local pid
  pid=$(awk 'NR == 1 { print $1 }' "$pfqueue/pid/master.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = master ] || return 1
  echo "$pid"
}

cleanup() {
  local rc=$? pid i
  trap - EXIT INT TERM
  if pid=$(pf_master_pid); then
    postfix -c "$pfconf" stop >/dev/null 2>&1 || true
    for i in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    # Stragglers: the master leads its own session and process group.
    if [ -d "/proc/$pid" ]; then kill -9 -- "-$pid" 2>/dev/null || true; fi
  fi
  for pid in ${vpid:-} ${vsink:-} ${psink:-}; do kill "$pid" 2>/dev/null || true; done
  for pid in ${vpid:-} ${vsink:-} ${psink:-}; do
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
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

# --- sinks: one per MTA, so each counts only its own MTA's deliveries.
start_sink() { # PORT NAME; sets sink_pid
  "$verdant" sink --listen 127.0.0.1:"$1" --workers 1 --stats-json "$work/$2.json" 2>"$work/$2.log" &
  sink_pid=$!
  wait_for "$work/$2.log" "sink listening on"
}
start_sink "$VSINK_PORT" vsink; vsink=$sink_pid
start_sink "$PSINK_PORT" psink; psink=$sink_pid

# --- Verdant: fresh spool, static route to its sink (no DNS).
if [ "$DELIVERY_LOG" = 1 ]; then vlog="$work/delivery.log"; else vlog=""; fi
printf '[delivery]\nlog = "%s"\n' "$vlog" > "$work/verdant.toml"
vcmd=("$verdant" serve --config "$work/verdant.toml" --workers "$WORKERS" --listen 127.0.0.1:$VERDANT_PORT
      --spool "$work/spool" --route "*=127.0.0.1:$VSINK_PORT")
"${vcmd[@]}" 2>"$work/verdant.log" &
vpid=$!
wait_for "$work/verdant.log" "accepting mail"

# --- Postfix: a private instance. Minimal main.cf, Debian's master.cf with
# the smtpd listener moved to 127.0.0.1:POSTFIX_PORT; defaults otherwise.
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
  "relayhost = [127.0.0.1]:$PSINK_PORT" \
  "smtp_dns_support_level = disabled" \
  "alias_maps =" \
  "alias_database =" \
  "maillog_file_prefixes = $work" \
  "maillog_file = $work/postfix.log"
# No chroot: the temporary queue directory has none of the files (resolv.conf,
# localtime, ...) Debian copies into /var/spool/postfix for it.
postconf -c "$pfconf" -F '*/*/chroot = n'
postconf -c "$pfconf" -M# smtp/inet
postconf -c "$pfconf" -M "127.0.0.1:$POSTFIX_PORT/inet = 127.0.0.1:$POSTFIX_PORT inet n - n - - smtpd"
postfix -c "$pfconf" check || die "postfix check failed (see above or $work/postfix.log)"
postfix -c "$pfconf" start >/dev/null 2>&1 || die "postfix start failed"
pfmaster=$(pf_master_pid) || die "Postfix's master is not running"

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
mta_cpu() { if [ "$1" = verdant ]; then proc_cpu "$vpid"; else postfix_cpu; fi; }

# sink_stat NAME: prints "messages_accepted last_accepted_at_us" from the
# sink's stats file (written atomically every second).
sink_stat() {
  awk '/"messages_accepted"/ { gsub(/[^0-9]/, ""); n = $0 }
       /"last_accepted_at"/  { gsub(/[^0-9]/, ""); t = $0 }
       END { print n + 0, t + 0 }' "$work/$1.json" 2>/dev/null || echo "0 0"
}

# run MTA N FLAGS...: sends N messages through MTA (verdant|postfix), waits
# until its sink has them all; prints "seconds cpu_seconds smtp_source_rc".
run() {
  local mta=$1 n=$2 port sink c0 count last t0 cpu0 cpu1 rc deadline
  shift 2
  if [ "$mta" = verdant ]; then port=$VERDANT_PORT sink=vsink; else port=$POSTFIX_PORT sink=psink; fi
  read -r c0 _ < <(sink_stat $sink)
  cpu0=$(mta_cpu "$mta")
  t0=$(date +%s%6N)
  rc=0
  timeout "$TIMEOUT" smtp-source "$@" -m "$n" -s $SESSIONS -l $SIZE -f a@example.com -t b@example.net \
    127.0.0.1:"$port" >/dev/null || rc=$?
  deadline=$((t0 + TIMEOUT * 1000000))
  while :; do
    read -r count last < <(sink_stat $sink)
    [ "$count" -ge $((c0 + n)) ] && break
    [ "$(date +%s%6N)" -lt $deadline ] || die "$mta: the sink got $((count - c0)) of $n messages in ${TIMEOUT}s (smtp-source exit $rc)"
    sleep 0.2
  done
  cpu1=$(mta_cpu "$mta")
  [ "$count" -eq $((c0 + n)) ] || echo "relay-vs-postfix: $mta: the sink got $((count - c0)) messages for $n sent" >&2
  awk -v t0="$t0" -v t1="$last" -v c0="$cpu0" -v c1="$cpu1" -v hz="$hz" -v rc="$rc" \
    'BEGIN { printf "%.6f %.4f %d\n", (t1 - t0) / 1e6, (c1 - c0) / hz, rc }'
}

run verdant $WARMUP -d >/dev/null
run postfix $WARMUP -d >/dev/null

stamp=$(date -u +%Y-%m-%dT%H:%MZ)
out="benches/runs/$(date -u +%Y-%m-%d)-relay-vs-postfix.md"
report=$work/report.md       # appended to $out only once every round is done
{
  echo "## $stamp — relay throughput end to end, Verdant vs Postfix"
  echo
  echo "Machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
       "load average before the rounds: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Build: $($verdant --version), commit $commit; Postfix $(postconf -h mail_version)."
  echo "Load: \`smtp-source -s $SESSIONS -l $SIZE [-d] -m N -f a@example.com -t b@example.net\`," \
       "$ROUNDS alternating rounds per mode after $WARMUP warm-up messages each;" \
       "N = $MESSAGES for Verdant and $PF_MESSAGES for Postfix with \`-d\` (connections reused), half that without."
  echo "Sinks: \`verdant sink --workers 1\`, one per MTA. Time: from the start of smtp-source to the sink's" \
       "timestamp of the round's last message. CPU: every process of the MTA (Postfix: master, reaped and live" \
       "children), not smtp-source or the sink."
  echo "Verdant: \`verdant serve --workers $WORKERS --route '*=127.0.0.1:SINK'\` (0 = one per core), fresh spool," \
       "delivery log $([ "$DELIVERY_LOG" = 1 ] && echo on || echo off), defaults otherwise."
  echo "Postfix: private instance (own config, queue and data directories), Postfix defaults" \
       "(default_process_limit = $(postconf -c "$pfconf" -h default_process_limit)," \
       "default_destination_concurrency_limit = $(postconf -c "$pfconf" -h default_destination_concurrency_limit))" \
       "except: $(postconf -c "$pfconf" -n | grep -v -e _directory -e maillog_file_prefixes | sed "s/ = /=/; s/ =\$/=/; s|$work|TMP|" | paste -sd, | sed 's/,/, /g');" \
       "chroot off; smtpd on 127.0.0.1:PORT; log to a file through postlogd."
  echo
  echo "| mode | round | Verdant msg/s | Postfix msg/s | ratio (target ≥ 8) | Verdant CPU ms/msg | Postfix CPU ms/msg | CPU ratio Postfix/Verdant (target ≥ 8) |"
  echo "|---|---|---|---|---|---|---|---|"
} | tee -a "$report"

f() { awk "BEGIN { printf \"$1\", $2 }"; }
for mode in $MODES; do
  case $mode in
    reuse) flags=(-d); nv=$MESSAGES; np=$PF_MESSAGES ;;
    new) flags=(); nv=$(((MESSAGES + 1) / 2)); np=$(((PF_MESSAGES + 1) / 2)) ;;
  esac
  sum_rv=0; sum_rp=0; sum_cv=0; sum_cp=0
  for r in $(seq "$ROUNDS"); do
    res=$(run verdant $nv ${flags[@]+"${flags[@]}"}); read -r tv cv sv <<< "$res"
    res=$(run postfix $np ${flags[@]+"${flags[@]}"}); read -r tp cp sp <<< "$res"
    rv=$(f %.3f "$nv / $tv"); rp=$(f %.3f "$np / $tp")
    mv=$(f %.5f "$cv * 1000 / $nv"); mp=$(f %.5f "$cp * 1000 / $np")
    sum_rv=$(f %.3f "$sum_rv + $rv"); sum_rp=$(f %.3f "$sum_rp + $rp")
    sum_cv=$(f %.5f "$sum_cv + $mv"); sum_cp=$(f %.5f "$sum_cp + $mp")
    [ "$sv" = 0 ] && [ "$sp" = 0 ] || echo "relay-vs-postfix: smtp-source exit: Verdant $sv, Postfix $sp" >&2
    printf '| %s | %d | %.0f | %.0f | %.1f | %.3f | %.3f | %.1f |\n' $mode "$r" "$rv" "$rp" "$(f %.4f "$rv / $rp")" \
      "$mv" "$mp" "$(f %.4f "$mp / $mv")" | tee -a "$report"
  done
  printf '| %s | mean | %.0f | %.0f | **%.1f** | %.3f | %.3f | **%.1f** |\n' $mode \
    "$(f %.3f "$sum_rv / $ROUNDS")" "$(f %.3f "$sum_rp / $ROUNDS")" "$(f %.4f "$sum_rv / $sum_rp")" \
    "$(f %.5f "$sum_cv / $ROUNDS")" "$(f %.5f "$sum_cp / $ROUNDS")" "$(f %.4f "$sum_cp / $sum_cv")" | tee -a "$report"
done
echo | tee -a "$report"
cat "$report" >> "$out"
echo "Postfix queue left: $(find "$pfqueue"/{incoming,active,deferred,hold,corrupt} -type f 2>/dev/null | wc -l) files;" \
     "Postfix log: $(grep -c 'status=sent' "$work/postfix.log" || true) sent, $(grep -c 'status=deferred' "$work/postfix.log" || true) deferred;" \
     "Verdant: $(wc -l < "$work/verdant.log") log lines, $(cat "$work/delivery.log" 2>/dev/null | wc -l) delivery log lines, spool $(du -sh "$work/spool" | cut -f1)." >&2
