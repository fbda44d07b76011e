#!/usr/bin/env bash
# Runs featcache against a local Redis on a fresh Debian machine with Go, with config.yaml: RESP on 127.0.0.1:6380,
# admin HTTP (/metrics, /healthz, /readyz) on 127.0.0.1:9121. Extra arguments go to featcache:
#
#   scripts/run.sh                              featcache in front of the Redis on 127.0.0.1:6379
#   scripts/run.sh -listen 127.0.0.1:6390       a second copy: its admin listener moves to 127.0.0.1:9131
#   scripts/run.sh -config my.yaml              another configuration file
#   REDIS_PORT=6400 scripts/run.sh              a Redis on 127.0.0.1:6400 instead (-upstream 127.0.0.1:6400)
#
# Before starting featcache it checks the configuration (featcache -check) and the upstream: a Redis that answers
# PING is used; one that needs a password (NOAUTH) is used only when the configuration sets upstream.password or
# upstream.password_file; anything else answering there stops the script. When nothing listens on the local Redis
# port, it installs redis-server if missing, starts one there, and stops that one again when featcache exits
# (FEATCACHE_KEEP_REDIS=1 leaves it running). With -listen HOST:PORT and no -admin, the admin listener moves to
# 127.0.0.1:PORT+2741 (6380 -> 9121, as in config.yaml), so that copies side by side do not collide; -admin ADDR
# chooses it. A non-loopback -listen needs a password in the file, or protected_mode: false.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "run.sh: $*"; }
fail() {
  echo "run.sh: $*" >&2
  exit 1
}

# The flags run.sh needs to know about; everything is passed on to featcache as given.
listen="" admin_given="" upstream_given="" config="config.yaml"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  a=${args[i]}
  next=""
  if ((i + 1 < ${#args[@]})); then next=${args[i + 1]}; fi
  case "$a" in
    -listen | --listen) listen=$next ;;
    -listen=* | --listen=*) listen=${a#*=} ;;
    -admin | --admin | -admin=* | --admin=*) admin_given=1 ;;
    -upstream | --upstream | -upstream=* | --upstream=*) upstream_given=1 ;;
    -config | --config) config=$next ;;
    -config=* | --config=*) config=${a#*=} ;;
  esac
done

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  say "installing redis-server and redis-tools"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools >/dev/null
fi
mkdir -p bin
go build -o bin/featcache .

extra=()
if [ -n "${REDIS_PORT:-}" ] && [ -z "$upstream_given" ]; then
  extra+=(-upstream "127.0.0.1:$REDIS_PORT")
fi
if [ -n "$listen" ] && [ -z "$admin_given" ]; then
  port=${listen##*:}
  [[ "$port" =~ ^[0-9]+$ ]] || fail "-listen $listen: want HOST:PORT"
  if ((port == 0)); then
    extra+=(-admin "127.0.0.1:0")
  elif ((port + 2741 <= 65535)); then
    extra+=(-admin "127.0.0.1:$((port + 2741))")
  else
    extra+=(-admin "")
    say "-listen $listen: no admin port at $port + 2741; the admin listener is off (-admin ADDR to choose one)"
  fi
fi
fc=(bin/featcache -config config.yaml "$@" "${extra[@]}")

# featcache -check validates the file and the flags and prints one line:
#   featcache: configuration OK: FILE (listen L, admin A, upstream U with(out) a password, N policies)
if ! check=$("${fc[@]}" -check); then
  fail "featcache -check failed (above): fix $config or the arguments"
fi
field() { sed -n "s/.*[(,] *$1 \([^ ,]*\).*/\1/p" <<<"$check"; }
listen_addr=$(field listen)
admin_addr=$(field admin)
upstream=$(sed -n 's/.*, upstream \([^ ]*\) .*/\1/p' <<<"$check")
upstream=${upstream%%,*} # a cluster's first seed node is enough to tell what answers

# probe HOST PORT prints what answers there: down (nothing accepts connections), pong (Redis), loading (Redis,
# loading its data), noauth (Redis that needs a password), or "other: REPLY".
probe() {
  # shellcheck disable=SC2016 # $0 and $1 are expanded by the inner bash
  if ! timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null; then
    echo down
    return
  fi
  local reply
  reply=$(timeout 3 redis-cli -h "$1" -p "$2" ping 2>&1) || true
  case "$reply" in
    PONG) echo pong ;;
    LOADING*) echo loading ;;
    NOAUTH*) echo noauth ;;
    *) echo "other: ${reply:-no reply within 3s}" ;;
  esac
}

redis_pid="" redis_addr=""
# shellcheck disable=SC2317 # called by the EXIT trap
stop_redis() {
  [ -n "$redis_pid" ] || return 0
  if [ "${FEATCACHE_KEEP_REDIS:-}" = 1 ]; then
    say "leaving the redis-server it started on $redis_addr running (pid $redis_pid)"
    return 0
  fi
  kill "$redis_pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
  say "stopped the redis-server it started on $redis_addr (pid $redis_pid; FEATCACHE_KEEP_REDIS=1 leaves it running)"
}
trap stop_redis EXIT

case "$upstream" in
  "" | sentinel:*)
    say "upstream ${upstream:-unknown}: not checked" ;;
  *)
    host=${upstream%:*} port=${upstream##*:}
    host=${host#[} host=${host%]}
    state=$(probe "$host" "$port")
    case "$state" in
      pong) say "using the Redis at $upstream" ;;
      loading) say "using the Redis at $upstream (it is loading its data: featcache is ready once it answers)" ;;
      noauth)
        if [[ "$check" == *" with a password"* ]]; then
          say "using the Redis at $upstream with the password $config sets"
        else
          fail "the Redis at $upstream needs a password (NOAUTH): set upstream.password, or upstream.password_file" \
            "(a file holding it), in $config"
        fi
        ;;
      down)
        if [ "$host" != 127.0.0.1 ] && [ "$host" != localhost ]; then
          say "nothing answers at $upstream yet: featcache starts anyway, and /readyz answers 503 until it does"
        else
          pidfile="${TMPDIR:-/tmp}/featcache-redis-$port.pid"
          rm -f "$pidfile"
          redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --save "" --pidfile "$pidfile" \
            --logfile "${TMPDIR:-/tmp}/featcache-redis-$port.log"
          for _ in $(seq 50); do [ -s "$pidfile" ] && [ "$(probe 127.0.0.1 "$port")" = pong ] && break; sleep 0.1; done
          [ -s "$pidfile" ] || fail "redis-server did not start on 127.0.0.1:$port (see ${TMPDIR:-/tmp}/featcache-redis-$port.log)"
          redis_pid=$(cat "$pidfile") redis_addr="127.0.0.1:$port"
          say "started redis-server on $redis_addr (pid $redis_pid); it is stopped when featcache exits"
        fi
        ;;
      *)
        fail "$upstream answers, but not as Redis (PING got: ${state#other: }): stop what runs there, or point" \
          "featcache at your Redis with -upstream HOST:PORT (or REDIS_PORT=PORT for a local one)"
        ;;
    esac
    ;;
esac

if [ "$admin_addr" = none ]; then
  say "featcache: RESP on $listen_addr, no admin listener"
else
  say "featcache: RESP on $listen_addr, admin HTTP on $admin_addr (/metrics, /healthz, /readyz)"
fi
# featcache runs as a child, not exec'd, so that the redis-server started above can be stopped when it exits. A
# signal to this script is passed on: SIGINT (Ctrl-C, which featcache also receives itself) and SIGTERM make it
# shut down gracefully.
"${fc[@]}" &
fc_pid=$!
trap 'kill -TERM "$fc_pid" 2>/dev/null || true' INT TERM HUP
# wait returns early when a signal is passed on; the last wait, once featcache has exited, returns its status.
while kill -0 "$fc_pid" 2>/dev/null; do wait "$fc_pid" || true; done
status=0
wait "$fc_pid" || status=$?
exit "$status"
