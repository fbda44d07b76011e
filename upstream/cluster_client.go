package upstream

import (
	"time"

	"featcache/internal/resp"
)

// What the Client offers the proxy, whichever the upstream: a single node's pool or a Redis Cluster's router. The
// single-node path of each method is the Pool's own, unchanged.

// detectCluster asks the addresses in order, the first through c.Pool, whether they are Redis Cluster nodes
// (INFO cluster: "cluster_enabled:1"); the first that answers decides, and one that answers INFO with an error
// (a server without INFO, an ACL that forbids it) is not a cluster featcache can drive. answered is false when
// none answered within the timeout.
func (c *Client) detectCluster() (cluster, answered bool) {
	call := NewCall()
	req := resp.AppendCommand(nil, "INFO", "cluster")
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
		info, _, ok := resp.BulkPayload(call.Frame(0))
		cluster = ok && infoField(string(info), "cluster_enabled") == "1"
		if cluster {
			c.log.Info("upstream: Redis Cluster detected", "seed", addr)
		}
		return cluster, true
	}
	return false, false
}

// decideLater asks the addresses again every HealthInterval until one answers, then starts what the upstream is,
// whose loop (the health PING, or the cluster's) then owns c.exited. Meanwhile Do goes to the first address, as in
// front of a single node, and fails like it while nothing answers; tracking has not started, so the local tier
// stores nothing.
func (c *Client) decideLater() {
	c.log.Warn("upstream: no address answered; whether it is a Redis Cluster is decided when one does",
		"addr", c.opt.Addresses[0])
	tick := time.NewTicker(c.opt.HealthInterval)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			close(c.exited)
			return
		case <-tick.C:
		}
		switch cluster, answered := c.detectCluster(); {
		case !answered:
			continue
		case cluster:
			c.startCluster()
		default:
			c.startSingle(func() {})
			c.probe()
		}
		return
	}
}

// startCluster makes the cluster router, whose loop owns c.exited, and routes through it from now on.
func (c *Client) startCluster() {
	opt := c.opt
	c.curMu.Lock()
	opt.Prefixes = c.prefix // as SetPrefixes may have changed them while nothing answered
	c.curMu.Unlock()
	cl := newCluster(opt, c.Pool, c.log, c.watching)
	c.cluster.Store(cl)
	close(c.decided)
	go cl.run(c.stop, c.exited)
}

// Decided returns a channel closed once the Client knows whether the upstream is a Redis Cluster: at once when an
// address answered New, later otherwise (Cluster is nil until then).
func (c *Client) Decided() <-chan struct{} { return c.decided }

// Cluster returns the router when the upstream is a Redis Cluster, nil for a single node (and until Decided).
func (c *Client) Cluster() *Cluster { return c.cluster.Load() }

// Do sends p over a shared connection and waits for its p.Len() reply frames, within the timeout: featcache's
// own reads. On a single node it is Pool.Do of p's bytes; in front of a cluster, Cluster.Do, which sends each of
// p's commands to the master of its slot.
func (c *Client) Do(call *Call, p *Payload) error { return c.send(call, p, false) }

// Forward is Do for commands forwarded for clients, waited for as a direct client would (or within the command
// timeout): Pool.Forward on a single node, Cluster.Forward in front of a cluster.
func (c *Client) Forward(call *Call, p *Payload) error { return c.send(call, p, true) }

// send is Do, or Forward if forward is set.
func (c *Client) send(call *Call, p *Payload, forward bool) error {
	if cl := c.cluster.Load(); cl != nil {
		if forward {
			return cl.Forward(call, p)
		}
		return cl.Do(call, p)
	}
	c.Pool.start(call, p.Bytes(), p.Len(), forward, c.Pool.group(p))
	call.readsAgain(p)
	return call.Wait()
}

// Start is Pool.Start of p on a single node, where a payload that only reads is sent again, alone, if its shared
// connection is lost (Call.alone). In front of a cluster, whose router waits for every node it sends to, the round
// trip (Cluster.Forward or Cluster.Do) runs on a goroutine of its own, so that WaitUntil and Wait work alike. p
// must stay unchanged until Wait returns.
func (c *Client) Start(call *Call, p *Payload, fwd bool) {
	cl := c.cluster.Load()
	if cl == nil {
		c.Pool.start(call, p.Bytes(), p.Len(), fwd, c.Pool.group(p))
		call.readsAgain(p)
		return
	}
	n := p.Len()
	call.prepare(n)
	if n == 0 {
		return
	}
	done := make(chan struct{})
	call.bg = done
	go func() {
		defer close(done)
		// The router starts calls of its own on the nodes' pools; this one gets their frames at the end.
		in := callPool.Get().(*Call)
		in.Cancel = call.Cancel
		cl.do(in, p, fwd)
		call.Replies, in.Replies = in.Replies, call.Replies[:0]
		call.Ends, in.Ends = in.Ends, call.Ends[:0]
		call.Err, call.Asked = in.Err, in.Asked
		in.reset(0)
		in.Cancel = nil
		callPool.Put(in)
	}()
}

// Fetch is Pool.Fetch, over Cluster.Do in front of a cluster: each key's GET and PTTL go to its master.
func (c *Client) Fetch(call *Call, keys [][]byte, out []Fetched) ([]Fetched, error) {
	if cl := c.cluster.Load(); cl != nil {
		return fetched(call, cl.Do(call, fetchPayload(call, keys)), out)
	}
	return c.Pool.Fetch(call, keys, out)
}

// Dedicated returns a dedicated connection for featcache's own use (warming): to the single node, or to the
// first master of a cluster; a new connection's setup is bounded by the timeout.
func (c *Client) Dedicated() (*Conn, error) {
	if cl := c.cluster.Load(); cl != nil {
		return cl.Dedicated(NoSlot)
	}
	return c.Pool.Dedicated()
}

// DedicatedSlot returns a dedicated connection for a client's command to the master of slot (NoSlot: any); on a
// single node, to it, whose setup waits as the command would (Pool.DedicatedWait).
func (c *Client) DedicatedSlot(slot int) (*Conn, error) {
	if cl := c.cluster.Load(); cl != nil {
		return cl.Dedicated(slot)
	}
	return c.Pool.DedicatedWait()
}

// DedicatedKey returns a dedicated connection for a client's command to the node that holds key.
func (c *Client) DedicatedKey(key []byte) (*Conn, error) {
	if cl := c.cluster.Load(); cl != nil {
		return cl.Dedicated(int(Slot(key)))
	}
	return c.Pool.DedicatedWait()
}

// Healthy reports whether the upstream answers: the single node, or every master of a cluster.
func (c *Client) Healthy() bool {
	if cl := c.cluster.Load(); cl != nil {
		return cl.Healthy()
	}
	return c.Pool.Healthy()
}

// Reached reports whether the upstream (any node of a cluster) has answered at least once since start.
func (c *Client) Reached() bool {
	if cl := c.cluster.Load(); cl != nil {
		return cl.Reached()
	}
	return c.Pool.Reached()
}
