#!/usr/bin/env bash
# Runs featcache's test suite on a fresh Debian machine with Go: installs what the tests need when it is missing
# (redis-server, redis-tools, python3-redis), then vets and runs every test with the race detector, and each fuzz
# target briefly. The tests start their own redis-server processes on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
/usr/bin/python3 -c 'import redis' 2>/dev/null || need+=(python3-redis)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change: $unformatted" >&2
  exit 1
fi
echo "== go vet"
go vet ./...
echo "== go test -race (TestChaos runs on its own below)"
go test -race -count=1 -timeout 20m -skip '^TestChaos$' ./...

echo "== consistency checker (${CHECKER:-5s}; longer: CHECKER=60s scripts/test.sh)"
go test -race -count=1 -run '^TestConsistencyChecker$' ./proxy/ -checker="${CHECKER:-5s}" -v | grep -E '^(consistency checker|--- |ok|FAIL)'

echo "== benchmarks (each once, so that they keep working; numbers come from make bench)"
go test -count=1 -run '^$' -bench . -benchtime=1x ./... | grep -E '^(--- |ok|FAIL|panic)'

echo "== chaos test (its figures, and any failure it reports)"
go test -race -count=1 -run '^TestChaos$' ./proxy/ -v | grep -E '^( +[a-z_]+_test\.go:[0-9]+: |--- |ok|FAIL)'

echo "== fuzz (briefly)"
fuzz() { go test -run='^$' -fuzz="^$2\$" -fuzztime="${FUZZTIME:-10s}" "./$1/"; }
fuzz proxy FuzzReader
fuzz proxy FuzzServe
fuzz proxy FuzzKeys
fuzz policy FuzzMatch
fuzz policy FuzzGlob
fuzz policy FuzzParse
fuzz localcache FuzzHeader
fuzz upstream FuzzFrameScanner
echo "== all tests passed"
