package main

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"featcache/upstream"
)

// With -cluster N a Redis Cluster of N masters (no replicas, on the server CPUs, made with redis-cli --cluster
// create) is started next to the one Redis, seeded with the same workload (each key straight into the master of
// its slot), and a second featcache, "featcache-cluster", is given its first master as the seed. It is measured in
// the same interleaved rounds as the single-node targets, so its throughput, latency and hit ratio sit next to
// theirs under the same machine conditions. The load generator speaks to one address and does not follow MOVED,
// so the cluster itself is not a target; the relay and redis-benchmark are not used with -cluster.

// startCluster starts n cluster nodes, joins them, waits until every node says cluster_state:ok, and returns the
// masters' addresses in the order of their slots, and their processes.
func (f *fleet) startCluster(bin string, n int) ([]string, []*proc, error) {
	var addrs []string
	var procs []*proc
	for i := 0; i < n; i++ {
		addr, err := freeClusterAddr()
		if err != nil {
			return nil, nil, err
		}
		_, port, _ := net.SplitHostPort(addr)
		p, err := f.start("redis-"+port, bin, "--port", port, "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--dir", f.dir, "--protected-mode", "no", "--cluster-enabled", "yes",
			"--cluster-config-file", "nodes-"+port+".conf", "--cluster-node-timeout", "5000")
		if err != nil {
			return nil, nil, err
		}
		// PING, since a cluster node without slots refuses GET.
		if err := waitFor(p, addr, "PING"); err != nil {
			return nil, nil, err
		}
		addrs, procs = append(addrs, addr), append(procs, p)
	}
	args := append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, a := range addrs {
		for {
			rc, err := dialRESP(a, time.Second)
			if err == nil {
				v, _ := rc.do("CLUSTER", "INFO")
				rc.Close()
				if s, _ := v.(string); strings.Contains(s, "cluster_state:ok") {
					break
				}
			}
			if time.Now().After(deadline) {
				return nil, nil, fmt.Errorf("cluster node %s not ok within 30s", a)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return addrs, procs, nil
}

// freeClusterAddr returns a loopback address whose port, below 55535, is free, as is its bus port (+10000).
func freeClusterAddr() (string, error) {
	for range 100 {
		addr, err := freeAddr()
		if err != nil {
			return "", err
		}
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		if port >= 55535 {
			continue
		}
		bus, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000))
		if err != nil {
			continue
		}
		bus.Close()
		return addr, nil
	}
	return "", errors.New("no free port pair (port, port+10000) below 55535")
}

// clusterOwners reads CLUSTER SLOTS from addr: the master address of every slot.
func clusterOwners(addr string) ([]string, error) {
	rc, err := dialRESP(addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	v, err := rc.do("CLUSTER", "SLOTS")
	if err != nil {
		return nil, err
	}
	owners := make([]string, upstream.SlotCount)
	ranges, _ := v.([]any)
	for _, r := range ranges {
		e, _ := r.([]any)
		if len(e) < 3 {
			continue
		}
		start, _ := e[0].(int64)
		end, _ := e[1].(int64)
		node, _ := e[2].([]any)
		if len(node) < 2 {
			continue
		}
		host, _ := node[0].(string)
		port, _ := node[1].(int64)
		for s := start; s <= end && s < upstream.SlotCount; s++ {
			owners[s] = net.JoinHostPort(host, strconv.FormatInt(port, 10))
		}
	}
	return owners, nil
}

// seedCluster is seedRedis against a cluster: every master gets the keys of its slots, all masters at once.
func seedCluster(seed string, w *workload) (time.Duration, int64, error) {
	owners, err := clusterOwners(seed)
	if err != nil {
		return 0, 0, err
	}
	masters := map[string]bool{}
	for _, o := range owners {
		if o == "" {
			return 0, 0, errors.New("the cluster does not serve every slot")
		}
		masters[o] = true
	}
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total int64
	var firstErr error
	for m := range masters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var key []byte
			keep := func(i int) bool {
				key = w.appendKey(key[:0], i)
				return owners[upstream.Slot(key)] == m
			}
			_, n, err := seedKeysWhere(m, w.Keys, func(dst []byte, i int) []byte { return w.appendKey(dst, i) }, w.value, keep)
			mu.Lock()
			total += n
			if err != nil && firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return time.Since(start), total, firstErr
}

// startClusterTarget starts the Redis Cluster of s.Cluster masters, seeds it with the workload and starts the
// featcache in front of it, the "featcache-cluster" target, measured in the same interleaved rounds as the
// single-node targets.
func startClusterTarget(e *env, s settings, f *fleet, pr *profileResult, logf func(string, ...any)) (*liveTarget, error) {
	w := &s.Workload
	seeds, _, err := f.startCluster(e.redisServer, s.Cluster)
	if err != nil {
		return nil, err
	}
	logf("Redis Cluster of %d masters: %s; seeding %d keys into its masters", s.Cluster, strings.Join(seeds, " "), w.Keys)
	took, _, err := seedCluster(seeds[0], w)
	if err != nil {
		return nil, err
	}
	logf("seeded the cluster in %.1fs", took.Seconds())
	addr, p, err := f.startFeatcacheAs("featcache-cluster", e.featcache, seeds[0], s.MaxMemory.bytes)
	if err != nil {
		return nil, err
	}
	st, err := cacheStats(addr)
	if err != nil {
		return nil, err
	}
	if got := st.m["cluster_masters"]; got != int64(s.Cluster) {
		return nil, fmt.Errorf("featcache-cluster sees %d cluster masters; want %d", got, s.Cluster)
	}
	return &liveTarget{name: "featcache-cluster", kind: kindFeatcache, addr: addr, proc: p}, nil
}
