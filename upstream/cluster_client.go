package upstream

// What the Client offers the proxy, whichever the upstream: a single node's pool or a Redis Cluster's router. The
// single-node path of each method is the Pool's own, unchanged.

// detectCluster asks the addresses in order, the first through c.Pool, whether they are Redis Cluster nodes
// (INFO cluster: "cluster_enabled:1"); the first that answers decides, and one that answers INFO with an error
// (a server without INFO, an ACL that forbids it) is not a cluster featcache can drive. When none answers within
// the timeout, featcache starts in front of a single node, as before the upstream could be a cluster, and says so.
func (c *Client) detectCluster() bool {
	call := NewCall()
	req := AppendCommand(nil, "INFO", "cluster")
	for i, addr := range c.opt.Addresses {
		p := c.Pool
		if i > 0 {
			p = NewPool(PoolOptions{Addr: addr, Username: c.opt.Username, Password: c.opt.Password, Conns: 1,
				Timeout: c.opt.Timeout, ClientName: "featcache", TLS: c.opt.TLS})
		}
		err := p.Do(call, req, 1)
		if i > 0 {
			p.Close()
		}
		if err != nil {
			continue
		}
		info, _, ok := bulkPayload(call.Frame(0))
		cluster := ok && infoField(string(info), "cluster_enabled") == "1"
		if cluster {
			c.log.Info("upstream: Redis Cluster detected", "seed", addr)
		}
		return cluster
	}
	c.log.Warn("upstream: no address answered; starting in front of a single node (restart featcache once a Redis "+
		"Cluster upstream answers)", "addr", c.opt.Addresses[0])
	return false
}

// Cluster returns the router when the upstream is a Redis Cluster, nil for a single node.
func (c *Client) Cluster() *Cluster { return c.cluster }

// SetKeyFunc tells a cluster router how to find the keys of a command (the proxy's command table); a single
// node needs no keys.
func (c *Client) SetKeyFunc(f KeyFunc) {
	if c.cluster != nil {
		c.cluster.SetKeyFunc(f)
	}
}

// Do is Pool.Do on a single node, Cluster.Do in front of a cluster.
func (c *Client) Do(call *Call, payload []byte, n int) error {
	if c.cluster != nil {
		return c.cluster.Do(call, payload, n)
	}
	return c.Pool.Do(call, payload, n)
}

// Fetch is Pool.Fetch, over Cluster.Do in front of a cluster.
func (c *Client) Fetch(call *Call, keys [][]byte, out []Fetched) ([]Fetched, error) {
	if c.cluster != nil {
		return fetch(c.cluster.Do, call, keys, out)
	}
	return c.Pool.Fetch(call, keys, out)
}

// Dedicated returns a dedicated connection: to the single node, or to the first master of a cluster (for
// commands without keys).
func (c *Client) Dedicated() (*Conn, error) { return c.DedicatedSlot(NoSlot) }

// DedicatedSlot returns a dedicated connection to the master of slot (NoSlot: any); on a single node, to it.
func (c *Client) DedicatedSlot(slot int) (*Conn, error) {
	if c.cluster != nil {
		return c.cluster.Dedicated(slot)
	}
	return c.Pool.Dedicated()
}

// DedicatedKey returns a dedicated connection to the node that holds key.
func (c *Client) DedicatedKey(key []byte) (*Conn, error) {
	if c.cluster != nil {
		return c.cluster.Dedicated(int(Slot(key)))
	}
	return c.Pool.Dedicated()
}

// Healthy reports whether the upstream answers: the single node, or every master of a cluster.
func (c *Client) Healthy() bool {
	if c.cluster != nil {
		return c.cluster.Healthy()
	}
	return c.Pool.Healthy()
}

// Reached reports whether the upstream (any node of a cluster) has answered at least once since start.
func (c *Client) Reached() bool {
	if c.cluster != nil {
		return c.cluster.Reached()
	}
	return c.Pool.Reached()
}

// DedicatedKey returns a dedicated connection; a Pool has one node, so key does not matter. It lets code that
// writes one key on a dedicated connection take a Pool or a Client.
func (p *Pool) DedicatedKey(key []byte) (*Conn, error) { return p.Dedicated() }
