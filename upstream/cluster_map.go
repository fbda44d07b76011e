package upstream

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"featcache/internal/resp"
)

// The slot map: which master serves each hash slot, read from CLUSTER SLOTS (refresh), patched by MOVED (moved),
// and installed whole (installLocked), which also keeps the local tier's trust partitions (one per slot) in line
// with it.

// slotMap is one version of the routing table. It is never modified once stored; changes make a new one.
type slotMap struct {
	owner [SlotCount]*clusterNode // nil: no master serves the slot
	// masters are the nodes serving at least one slot, ordered by the lowest slot each serves: the order SCAN
	// walks them in, stable across a failover (the promoted replica takes its master's slots and place).
	masters []*clusterNode
	// fallback receives commands when no master is known (a node that answered, or a seed).
	fallback *clusterNode
}

// node returns the master of slot, or for NoSlot and slots no master serves the first master (the fallback when
// none is known): Redis then answers (CLUSTERDOWN, MOVED) as it would to any client.
func (m *slotMap) node(slot int) *clusterNode {
	if slot >= 0 {
		if nd := m.owner[slot]; nd != nil {
			return nd
		}
	}
	if len(m.masters) > 0 {
		return m.masters[0]
	}
	return m.fallback
}

// rebuildMasters computes masters from owner.
func (m *slotMap) rebuildMasters() {
	m.masters = m.masters[:0]
	seen := make(map[*clusterNode]bool)
	for _, nd := range m.owner {
		if nd != nil && !seen[nd] {
			seen[nd] = true
			m.masters = append(m.masters, nd)
		}
	}
}

// slotsOf returns the slots nd serves in m.
func (m *slotMap) slotsOf(nd *clusterNode) []int {
	var out []int
	for s, o := range m.owner {
		if o == nd {
			out = append(out, s)
		}
	}
	return out
}

// moved patches the slot map after "MOVED slot addr" (addr without a host means from's host) and asks for a full
// refresh; it returns the node to resend to.
func (cl *Cluster) moved(slot int, addr string, from *clusterNode) *clusterNode {
	addr = withHost(addr, from.addr)
	cl.mu.Lock()
	nd := cl.node(addr)
	old := cl.smap.Load()
	if old.owner[slot] != nd {
		m := &slotMap{owner: old.owner, fallback: old.fallback}
		m.owner[slot] = nd
		m.rebuildMasters()
		cl.installLocked(old, m)
	}
	cl.mu.Unlock()
	cl.refreshSoon()
	return nd
}

// askTarget returns the node an ASK redirect names.
func (cl *Cluster) askTarget(addr string, from *clusterNode) *clusterNode {
	addr = withHost(addr, from.addr)
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.node(addr)
}

// withHost completes an address without a host (Redis announces ":port" when it does not know its own IP) with
// the host of the node that sent it.
func withHost(addr, from string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "" {
		return addr
	}
	fh, _, _ := net.SplitHostPort(from)
	return net.JoinHostPort(fh, port)
}

// installLocked stores m as the slot map and brings the local tier's partitions in line with it: a slot that
// now belongs to another master than the one that last served it is flushed (its new master is a failed-over
// replica or a resharding target, whose data and tracking did not vouch for what was cached), and each slot is
// trusted exactly when its master's tracking is up. Trackers are started for new masters. Caller holds cl.mu.
func (cl *Cluster) installLocked(old, m *slotMap) {
	var flush []int
	changed := 0
	for s := range m.owner {
		nd := m.owner[s]
		if nd != old.owner[s] {
			changed++
		}
		if nd == nil {
			continue
		}
		if prev := cl.lastOwner[s]; prev != nil && prev != nd {
			flush = append(flush, s)
		}
		cl.lastOwner[s] = nd
	}
	cl.smap.Store(m)
	if cl.parts != nil && len(flush) > 0 {
		cl.parts.FlushPartitions(flush) // partition s is slot s
	}
	cl.startTrackersLocked(m)
	for _, ks := range cl.keyspaces {
		ks.startLocked(m)
	}
	cl.retrustLocked()
	if changed > 0 {
		cl.mapChanges.Add(1)
		cl.log.Info("upstream: cluster slot map changed", "masters", len(m.masters), "slots_moved", changed,
			"slots_flushed", len(flush))
	}
}

// refreshSoon asks the refresh loop for a refresh of the slot map; requests coalesce.
func (cl *Cluster) refreshSoon() {
	select {
	case cl.kick <- struct{}{}:
	default:
	}
}

// refresh reads CLUSTER SLOTS from the nodes (the masters first, then every other node seen, replicas and seeds
// included) and installs the map of the first that describes any slot; when every node that answers serves none
// (all slots removed), that empty map. Nodes no longer masters lose their trackers.
func (cl *Cluster) refresh() error {
	cl.lastRefresh.Store(time.Now().UnixNano())
	cl.refreshes.Add(1)
	call := NewCall()
	req := resp.AppendCommand(nil, "CLUSTER", "SLOTS")
	var lastErr error = ErrNoClusterNode
	var empty *clusterNode
	for _, nd := range cl.refreshOrder() {
		if err := nd.pool.Do(call, req, 1); err != nil {
			lastErr = err
			continue
		}
		ranges, err := parseClusterSlots(call.Frame(0), nd.addr)
		if err != nil {
			lastErr = fmt.Errorf("upstream: CLUSTER SLOTS from %s: %w", nd.addr, err)
			continue
		}
		if len(ranges) == 0 {
			// A node that knows no slot may have just restarted without its cluster configuration: ask the others.
			if empty == nil {
				empty = nd
			}
			continue
		}
		cl.apply(ranges, nd)
		return nil
	}
	if empty != nil {
		cl.apply(nil, empty)
		return nil
	}
	return lastErr
}

// refreshOrder is the nodes refresh asks, in order.
func (cl *Cluster) refreshOrder() []*clusterNode {
	m := cl.smap.Load()
	out := append([]*clusterNode(nil), m.masters...)
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, nd := range cl.nodes {
		if !slices.Contains(out, nd) {
			out = append(out, nd)
		}
	}
	return out
}

// apply installs the slot map that a CLUSTER SLOTS reply from src describes.
func (cl *Cluster) apply(ranges []slotRange, src *clusterNode) {
	cl.mu.Lock()
	old := cl.smap.Load()
	m := &slotMap{fallback: src}
	for _, r := range ranges {
		nd := cl.node(r.addr)
		if r.id != "" {
			nd.id = r.id
		}
		for s := r.start; s <= r.end && s < SlotCount; s++ {
			m.owner[s] = nd
		}
		for _, a := range r.replicas {
			cl.node(a)
		}
	}
	m.rebuildMasters()
	cl.installLocked(old, m)
	stop := cl.stopTrackersLocked(m)
	for _, ks := range cl.keyspaces {
		stop = append(stop, ks.stopLocked(m)...)
	}
	cl.mu.Unlock()
	for _, t := range stop {
		t.Close()
	}
}

// slotRange is one entry of CLUSTER SLOTS: slots start..end, their master and its replicas.
type slotRange struct {
	start, end int
	addr, id   string
	replicas   []string
}

// parseClusterSlots reads a CLUSTER SLOTS reply. Node addresses with an empty host get from's host; nodes whose
// endpoint is unknown ("?") are left out.
func parseClusterSlots(frame []byte, from string) ([]slotRange, error) {
	if len(frame) > 0 && frame[0] == '-' {
		return nil, resp.ParseError(frame)
	}
	entries, err := resp.ArrayElements(frame, nil)
	if err != nil {
		return nil, err
	}
	var out []slotRange
	for _, e := range entries {
		parts, err := resp.ArrayElements(e, nil)
		if err != nil || len(parts) < 3 {
			return nil, fmt.Errorf("%w: CLUSTER SLOTS entry %q", resp.ErrBadFrame, truncate(e, 64))
		}
		start, ok1 := resp.IntegerValue(parts[0])
		end, ok2 := resp.IntegerValue(parts[1])
		if !ok1 || !ok2 || start < 0 || end < start || end >= SlotCount {
			return nil, fmt.Errorf("%w: CLUSTER SLOTS range %q", resp.ErrBadFrame, truncate(e, 64))
		}
		r := slotRange{start: int(start), end: int(end)}
		for i, p := range parts[2:] {
			addr, id, ok := parseSlotNode(p, from)
			if !ok {
				continue
			}
			if i == 0 {
				r.addr, r.id = addr, id
			} else {
				r.replicas = append(r.replicas, addr)
			}
		}
		if r.addr != "" {
			out = append(out, r)
		}
	}
	return out, nil
}

// parseSlotNode reads one node of a CLUSTER SLOTS entry: [host, port, id, ...].
func parseSlotNode(frame []byte, from string) (addr, id string, ok bool) {
	f, err := resp.ArrayElements(frame, nil)
	if err != nil || len(f) < 2 {
		return "", "", false
	}
	host, _, ok := resp.BulkPayload(f[0])
	port, ok2 := resp.IntegerValue(f[1])
	if !ok || !ok2 || string(host) == "?" || port <= 0 {
		return "", "", false
	}
	if len(f) >= 3 {
		if b, _, ok := resp.BulkPayload(f[2]); ok {
			id = string(b)
		}
	}
	h := string(host)
	if h == "" {
		h, _, _ = net.SplitHostPort(from)
	}
	return net.JoinHostPort(h, strconv.FormatInt(port, 10)), id, true
}
