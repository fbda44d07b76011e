# The end-to-end benchmark, standard profile (under 3 minutes on 2 cores); see bench/main.go for flags.
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
