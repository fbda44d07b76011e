#!/usr/bin/env bash
# Runs featcache against a local Redis on a fresh Debian machine with Go: installs and starts redis-server on
# 127.0.0.1:6379 if none answers there, builds featcache and runs it with config.yaml (RESP on 127.0.0.1:6380,
# admin HTTP on 127.0.0.1:9121). Extra arguments go to featcache, e.g. scripts/run.sh -listen 127.0.0.1:6390 (a
# non-loopback address needs a password in the file, or protected_mode: false).
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools >/dev/null
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting redis-server on 127.0.0.1:6379"
  redis-server --port 6379 --bind 127.0.0.1 --daemonize yes --save "" --logfile "${TMPDIR:-/tmp}/featcache-redis.log"
  for _ in $(seq 50); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
mkdir -p bin
go build -o bin/featcache .
exec bin/featcache -config config.yaml "$@"
