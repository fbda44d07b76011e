package redistest

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"featcache/internal/resp"
)

// Cluster is a Redis Cluster of real redis-server processes on loopback ports, created by redis-cli --cluster
// create and stopped when the test ends.
type Cluster struct {
	tb testing.TB
	// Masters are the nodes created as masters, in the order of the slots they got (the first has slot 0).
	Masters []*Server
	// Replicas are the other nodes; Replicas[i] replicates Masters[i] when one replica per master was asked for.
	Replicas []*Server
}

// ClusterNodeTimeout is the cluster-node-timeout StartCluster gives its nodes unless args set another: short, so
// that a failover takes about a second, long enough that a busy test machine does not make healthy nodes look
// failed.
const ClusterNodeTimeout = 3000

// StartCluster starts masters*(1+replicas) cluster nodes on free loopback ports (each port and its bus port,
// port+10000, free), joins them with redis-cli --cluster create ... --cluster-replicas replicas, and waits until
// every node reports cluster_state:ok with all 16384 slots served. Extra args go to every redis-server.
func StartCluster(tb testing.TB, masters, replicas int, args ...string) *Cluster {
	tb.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		tb.Fatalf("redistest: redis-cli not found in PATH: %s", InstallHint)
	}
	base := []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.Itoa(ClusterNodeTimeout)}
	n := masters * (1 + replicas)
	nodes := make([]*Server, 0, n)
	for i := 0; i < n; i++ {
		nodes = append(nodes, startClusterNode(tb, append(base, args...)))
	}
	create := []string{"--cluster", "create"}
	for _, s := range nodes {
		create = append(create, s.Addr())
	}
	create = append(create, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	out, err := exec.Command("redis-cli", create...).CombinedOutput()
	if err != nil {
		tb.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	cl := &Cluster{tb: tb}
	waitOK(tb, nodes, 30*time.Second)
	// Sort the nodes by role, masters by their first slot, replicas by their master.
	owner := cl.slotOwners(nodes[0])
	for s := 0; s < 16384; {
		addr := owner[s]
		for _, nd := range nodes {
			if nd.Addr() == addr {
				cl.Masters = append(cl.Masters, nd)
			}
		}
		for s < 16384 && owner[s] == addr {
			s++
		}
	}
	for _, m := range cl.Masters {
		id := cl.NodeID(m)
		for _, nd := range nodes {
			if strings.Contains(string(nd.Do("INFO", "replication")), "role:slave") &&
				strings.Contains(string(nd.Do("CLUSTER", "NODES")), "myself,slave "+id) {
				cl.Replicas = append(cl.Replicas, nd)
			}
		}
	}
	if len(cl.Masters) != masters || len(cl.Replicas) != masters*replicas {
		tb.Fatalf("redistest: cluster has %d masters and %d replicas; want %d and %d", len(cl.Masters),
			len(cl.Replicas), masters, masters*replicas)
	}
	if replicas > 0 {
		Eventually(tb, 30*time.Second, "replicas in sync", func() bool {
			for _, r := range cl.Replicas {
				if !strings.Contains(string(r.Do("INFO", "replication")), "master_link_status:up") {
					return false
				}
			}
			return true
		})
	}
	return cl
}

// startClusterNode starts one node on a port whose bus port is free too.
func startClusterNode(tb testing.TB, args []string) *Server {
	tb.Helper()
	s := &Server{tb: tb, dir: tb.TempDir(), args: args}
	s.launch(freeClusterPort, "cluster node")
	return s
}

// freeClusterPort returns a loopback port below 55535 that is free, as is its cluster bus port (port+10000).
func freeClusterPort(tb testing.TB) int {
	tb.Helper()
	for i := 0; i < 100; i++ {
		port := FreePort(tb)
		bus, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000))
		if err != nil {
			continue
		}
		bus.Close()
		return port
	}
	tb.Fatalf("redistest: no free port pair (port, port+10000) below 55535")
	return 0
}

// Nodes returns every node: the masters, then the replicas.
func (c *Cluster) Nodes() []*Server {
	return append(append([]*Server(nil), c.Masters...), c.Replicas...)
}

// Addrs returns the masters' addresses, the seed list featcache is given.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Masters))
	for i, m := range c.Masters {
		out[i] = m.Addr()
	}
	return out
}

// WaitOK waits up to d until every live node reports cluster_state:ok with every slot served.
func (c *Cluster) WaitOK(d time.Duration) {
	c.tb.Helper()
	waitOK(c.tb, c.Nodes(), d)
}

func waitOK(tb testing.TB, nodes []*Server, d time.Duration) {
	tb.Helper()
	Eventually(tb, d, "cluster_state:ok on every node", func() bool {
		for _, nd := range nodes {
			if !nd.alive() {
				continue
			}
			info := string(nd.Do("CLUSTER", "INFO"))
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
				return false
			}
		}
		return true
	})
}

// alive reports whether the server process runs (it was not killed).
func (s *Server) alive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// NodeID returns the node's cluster id.
func (c *Cluster) NodeID(s *Server) string {
	c.tb.Helper()
	id, _, _ := resp.BulkPayload(s.Do("CLUSTER", "MYID"))
	return string(id)
}

// Slot returns the hash slot of key, as the cluster computes it.
func (c *Cluster) Slot(key string) int {
	c.tb.Helper()
	reply := c.Masters[0].Do("CLUSTER", "KEYSLOT", key)
	n, ok := resp.IntegerValue(reply)
	if !ok {
		c.tb.Fatalf("redistest: CLUSTER KEYSLOT %q: %q", key, reply)
	}
	return int(n)
}

// slotOwners returns, per slot, the address of the master that asked's CLUSTER SLOTS names.
func (c *Cluster) slotOwners(asked *Server) []string {
	c.tb.Helper()
	owner := make([]string, 16384)
	// CLUSTER SLOTS: per range [start, end, master [ip, port, id], replicas...]. An error or a node that does not
	// answer leaves every slot without an owner.
	v, _, err := resp.Decode(asked.Do("CLUSTER", "SLOTS"))
	if err != nil {
		return owner
	}
	for _, r := range v.Elems {
		if len(r.Elems) < 3 || len(r.Elems[2].Elems) < 2 {
			continue
		}
		start, end, master := int(r.Elems[0].Int), int(r.Elems[1].Int), r.Elems[2]
		if start < 0 || end < start || end > 16383 {
			continue
		}
		addr := master.Elems[0].Str + ":" + strconv.FormatInt(master.Elems[1].Int, 10)
		for s := start; s <= end; s++ {
			owner[s] = addr
		}
	}
	return owner
}

// MasterOf returns the node that serves key's slot now, as the first live master sees it.
func (c *Cluster) MasterOf(key string) *Server {
	c.tb.Helper()
	return c.MasterOfSlot(c.Slot(key))
}

// MasterOfSlot returns the node that serves slot now, as the first live node sees it.
func (c *Cluster) MasterOfSlot(slot int) *Server {
	c.tb.Helper()
	for _, asked := range c.Nodes() {
		if !asked.alive() {
			continue
		}
		addr := c.slotOwners(asked)[slot]
		for _, nd := range c.Nodes() {
			if nd.Addr() == addr {
				return nd
			}
		}
	}
	c.tb.Fatalf("redistest: no node serves slot %d", slot)
	return nil
}

// Do runs a command on the master of key (a write straight to the store, bypassing featcache).
func (c *Cluster) Do(key string, args ...string) []byte {
	c.tb.Helper()
	return c.MasterOf(key).Do(args...)
}

// Migrate moves slot from one master to another as redis-cli --cluster reshard does: IMPORTING on the target,
// MIGRATING on the source, then the slot's keys batch by batch with MIGRATE (between batches step, if not nil,
// runs: a test reads and writes while the slot is half moved), then SETSLOT NODE on both and on every other
// master.
func (c *Cluster) Migrate(slot int, from, to *Server, batch int, step func()) {
	c.tb.Helper()
	s := strconv.Itoa(slot)
	fromID, toID := c.NodeID(from), c.NodeID(to)
	expect := func(srv *Server, args ...string) {
		c.tb.Helper()
		if got := srv.Do(args...); !bytes.Equal(got, []byte("+OK\r\n")) {
			c.tb.Fatalf("redistest: %s on %s: %q", strings.Join(args, " "), srv.Addr(), got)
		}
	}
	expect(to, "CLUSTER", "SETSLOT", s, "IMPORTING", fromID)
	expect(from, "CLUSTER", "SETSLOT", s, "MIGRATING", toID)
	host, port, _ := net.SplitHostPort(to.Addr())
	for {
		keys := parseBulks(from.Do("CLUSTER", "GETKEYSINSLOT", s, strconv.Itoa(batch)))
		if len(keys) == 0 {
			break
		}
		args := append([]string{"MIGRATE", host, port, "", "0", "5000", "REPLACE", "KEYS"}, keys...)
		if got := from.Do(args...); !bytes.Equal(got, []byte("+OK\r\n")) && !bytes.HasPrefix(got, []byte("+NOKEY")) {
			c.tb.Fatalf("redistest: MIGRATE of slot %d: %q", slot, got)
		}
		if step != nil {
			step()
		}
	}
	expect(to, "CLUSTER", "SETSLOT", s, "NODE", toID)
	expect(from, "CLUSTER", "SETSLOT", s, "NODE", toID)
	for _, m := range c.Masters {
		if m != from && m != to && m.alive() {
			m.Do("CLUSTER", "SETSLOT", s, "NODE", toID)
		}
	}
}

// parseBulks reads an array of bulk strings; anything else has none.
func parseBulks(reply []byte) []string {
	elems, _ := resp.ParseBulkArray(reply, nil)
	out := make([]string, len(elems))
	for i, e := range elems {
		out[i] = string(e)
	}
	return out
}

// Failover kills master and promotes replica with CLUSTER FAILOVER TAKEOVER (no need to wait for the cluster to
// notice the failure), then waits until every live node agrees the cluster is ok. The killed master's Server stays
// in Masters, dead; the promoted replica is returned in its place by MasterOf.
func (c *Cluster) Failover(master, replica *Server) {
	c.tb.Helper()
	master.Kill()
	if got := replica.Do("CLUSTER", "FAILOVER", "TAKEOVER"); !bytes.Equal(got, []byte("+OK\r\n")) {
		c.tb.Fatalf("redistest: CLUSTER FAILOVER TAKEOVER on %s: %q", replica.Addr(), got)
	}
	Eventually(c.tb, 20*time.Second, "the replica is a master", func() bool {
		return strings.Contains(string(replica.Do("INFO", "replication")), "role:master")
	})
	c.WaitOK(30 * time.Second)
}

// String names the cluster's nodes, for test logs.
func (c *Cluster) String() string {
	return fmt.Sprintf("cluster masters %v", c.Addrs())
}
