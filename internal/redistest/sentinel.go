package redistest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/resp"
)

// Sentinel timings of a SentinelSet: short, so that tests see a failover within seconds.
const (
	// SentinelDownAfter is the sentinels' down-after-milliseconds: a primary silent this long is subjectively down.
	SentinelDownAfter = 1000
	// SentinelFailoverTimeout is the sentinels' failover-timeout in milliseconds.
	SentinelFailoverTimeout = 3000
)

// SentinelSet is a primary, its replicas and the Redis Sentinels that monitor them, all started by a test on
// free loopback ports. The sentinels run the installed redis-server in sentinel mode
// (redis-server sentinel.conf --sentinel), so no separate redis-sentinel binary is needed.
type SentinelSet struct {
	tb testing.TB
	// Name is the master set's name.
	Name string
	// Primary is the primary at start; after a failover it is a replica (ask Role).
	Primary *Server
	// Replicas replicate Primary at start.
	Replicas []*Server
	// Sentinels monitor Primary under Name.
	Sentinels []*Server
	// Password is the sentinels' requirepass ("" for none).
	Password string
}

// StartSentinelSet starts a primary, replicas replicas of it and sentinels sentinels monitoring it under name,
// with a quorum of a majority of the sentinels, down-after-milliseconds SentinelDownAfter and failover-timeout
// SentinelFailoverTimeout; sentinelPassword, if not "", is the sentinels' requirepass. It returns once every
// replica is in sync and every sentinel knows every replica, so a failover can be forced at once.
func StartSentinelSet(tb testing.TB, name string, replicas, sentinels int, sentinelPassword string) *SentinelSet {
	tb.Helper()
	// Any node may become a primary whose replicas sync from it: no waiting for more replicas before a sync
	// (repl-diskless-sync-delay is 5 seconds by default).
	node := []string{"--repl-diskless-sync-delay", "0"}
	set := &SentinelSet{tb: tb, Name: name, Primary: Start(tb, node...), Password: sentinelPassword}
	for i := 0; i < replicas; i++ {
		args := append([]string{"--replicaof", "127.0.0.1", strconv.Itoa(set.Primary.Port())}, node...)
		set.Replicas = append(set.Replicas, Start(tb, args...))
	}
	for _, r := range set.Replicas {
		Eventually(tb, 10*time.Second, "replica "+r.Addr()+" in sync", func() bool {
			return strings.Contains(string(r.Do("INFO", "replication")), "master_link_status:up")
		})
	}
	quorum := sentinels/2 + 1
	for i := 0; i < sentinels; i++ {
		set.Sentinels = append(set.Sentinels, StartSentinel(tb, name, set.Primary, quorum, sentinelPassword))
	}
	for _, s := range set.Sentinels {
		for _, r := range set.Replicas {
			Eventually(tb, 15*time.Second, "sentinel "+s.Addr()+" knows replica "+r.Addr(), func() bool {
				reply := string(set.SentinelDo(s, "SENTINEL", "REPLICAS", name))
				// A known, connected replica: its entry has flags "slave" alone and its link to the primary ok.
				return strings.Contains(reply, "\r\n"+strconv.Itoa(r.Port())+"\r\n") &&
					strings.Contains(reply, "$5\r\nflags\r\n$5\r\nslave\r\n") &&
					strings.Contains(reply, "$18\r\nmaster-link-status\r\n$2\r\nok\r\n")
			})
		}
	}
	return set
}

// StartSentinel starts one Redis Sentinel on a free loopback port monitoring primary under name with quorum;
// password, if not "", is its requirepass.
func StartSentinel(tb testing.TB, name string, primary *Server, quorum int, password string) *Server {
	tb.Helper()
	dir := tb.TempDir()
	conf := []string{
		fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d", name, primary.Port(), quorum),
		fmt.Sprintf("sentinel down-after-milliseconds %s %d", name, SentinelDownAfter),
		fmt.Sprintf("sentinel failover-timeout %s %d", name, SentinelFailoverTimeout),
		fmt.Sprintf("sentinel parallel-syncs %s 1", name),
	}
	if password != "" {
		conf = append(conf, "requirepass "+password)
	}
	// Sentinel rewrites its configuration file with what it learns: it must be a writable file of its own.
	path := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(path, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	s := start(tb, nil, nil, path)
	// Sentinel's internal periods (Redis 7.0's SENTINEL DEBUG): replicas' INFO every second rather than every 10
	// (a replica is known and fresh sooner), hellos every 500ms rather than 2s (a demoted primary that still says
	// master is converted after 2s rather than 8s), and no TILT mode unless the timer stalls for 30s rather than
	// 2s: on a loaded test machine TILT would freeze the sentinel for 30 seconds.
	c := s.Dial()
	defer c.Close()
	if password != "" {
		c.Do("AUTH", password)
	}
	if reply := string(c.Do("SENTINEL", "DEBUG", "info-period", "1000", "publish-period", "500",
		"tilt-trigger", "30000")); reply != "+OK\r\n" {
		tb.Fatalf("redistest: SENTINEL DEBUG: %q", reply)
	}
	return s
}

// LogTail returns the last n lines of every node's and sentinel's log, for a failing test to show.
func (set *SentinelSet) LogTail(n int) string {
	var b strings.Builder
	nodes := append(append([]*Server{set.Primary}, set.Replicas...), set.Sentinels...)
	for _, s := range nodes {
		log, _ := os.ReadFile(filepath.Join(s.Dir(), "redis.log"))
		lines := strings.Split(strings.TrimSpace(string(log)), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", s.Addr(), strings.Join(lines, "\n"))
	}
	return b.String()
}

// SentinelDo sends one command to sentinel s (authenticating first when the set has a password) and returns the
// raw reply.
func (set *SentinelSet) SentinelDo(s *Server, args ...string) []byte {
	set.tb.Helper()
	c := s.Dial()
	defer c.Close()
	if set.Password != "" {
		if reply := c.Do("AUTH", set.Password); string(reply) != "+OK\r\n" {
			set.tb.Fatalf("redistest: AUTH on sentinel %s: %q", s.Addr(), reply)
		}
	}
	return c.Do(args...)
}

// SentinelAddrs returns the sentinels' addresses.
func (set *SentinelSet) SentinelAddrs() []string {
	var out []string
	for _, s := range set.Sentinels {
		out = append(out, s.Addr())
	}
	return out
}

// Failover forces a failover with SENTINEL FAILOVER on the first sentinel, retrying while the sentinel answers
// that it cannot start one yet (no good replica, a failover in progress), for at most 15 seconds.
func (set *SentinelSet) Failover() {
	set.tb.Helper()
	var reply []byte
	Eventually(set.tb, 15*time.Second, "SENTINEL FAILOVER accepted", func() bool {
		reply = set.SentinelDo(set.Sentinels[0], "SENTINEL", "FAILOVER", set.Name)
		return string(reply) == "+OK\r\n"
	})
}

// Role returns the first element of s's ROLE reply: "master" or "slave".
func Role(tb testing.TB, s *Server) string {
	tb.Helper()
	reply := s.Do("ROLE")
	v, _, err := resp.Decode(reply)
	if err != nil || len(v.Elems) == 0 {
		tb.Fatalf("redistest: ROLE replied %q", reply)
	}
	return v.Elems[0].Str
}
