# The end-to-end benchmark, standard profile (under 5 minutes on 2 cores); see bench/main.go for flags.
.PHONY: bench
bench:
	go run ./bench -profile standard

# Staleness: time from a write (to Redis, or through another featcache) until featcache serves it.
.PHONY: staleness
staleness:
	go run ./bench staleness

# Feast: entities in Feast's Redis layout read with pipelined HMGET, featcache next to direct Redis.
.PHONY: feast
feast:
	go run ./bench feast

# Feast with Redis 0.5 ms away each way (netem in the bench's own network namespace, or the relay where the
# kernel has no netem), one entity per request, then open-loop phases at 25%, 50% and 90% of direct Redis's rate.
.PHONY: feast-remote
feast-remote:
	go run ./bench feast -remote-delay 500us -batch 1 -entities 50000 -open-loads 25%,50%,90%

# default.pgo is the CPU profile the Go compiler optimizes featcache with (profile-guided optimization; go build
# reads it from the main package's folder): featcache's own profiles over the last round of each step of the
# standard benchmark, merged. Regenerate it after changes to the request path; the build it profiles already uses
# the previous one, which is how Go's PGO is meant to be refreshed.
.PHONY: pgo
pgo:
	rm -rf bench/results/pgo && mkdir -p bench/results/pgo
	go run ./bench -profile standard -featcache-cpuprofile $(CURDIR)/bench/results/pgo/cpu.pprof
	go tool pprof -proto bench/results/pgo/*.cpu.pprof > default.pgo
