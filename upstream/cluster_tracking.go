package upstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Tracking in a cluster: each master has its own tracking connection (BCAST, the same prefixes as a single node),
// since Redis announces a write only on the node that executed it. Invalidations from any of them go to the local
// tier as they come; a null push (FLUSHALL, FLUSHDB on one master) flushes the whole tier, which is more than that
// master held but always safe. What differs is the loss of one connection: it says nothing about the others, so
// only the slots that master serves become untrusted (their partitions: PartitionedCache.SetPartitionsTrusted),
// their entries unverified under
// the policies' on_tracking_loss, and only their fills are not stored until it is back. A master that comes back
// as another server (its run_id changed: restarted, restored) has its slots flushed, as a single node that comes
// back as another one has the whole tier flushed. A slot that passes to another master (failover, resharding) is
// flushed when the slot map learns it (installLocked).
//
// The Client's Watcher (the proxy's CLIENT TRACKING) sees what every master's connection sees, as it sees the
// single node's: invalidations, null pushes, and each connection's loss and return. Keyspace streams
// (TrackKeyspace, keyspace.go) have a connection on every master too, started and stopped with the slot map.

// startTrackersLocked starts tracking on every master of m that has none. Caller holds cl.mu.
func (cl *Cluster) startTrackersLocked(m *slotMap) {
	if !cl.opt.Tracking {
		return
	}
	for _, nd := range m.masters {
		if nd.tracker == nil {
			nd.tracker = cl.startTracker(nd, cl.prefix)
		}
	}
}

// stopTrackersLocked detaches the trackers of nodes that are no longer masters in m and returns them; the caller
// closes them after releasing cl.mu (Close waits for their OnLost, which takes cl.mu).
func (cl *Cluster) stopTrackersLocked(m *slotMap) []*Tracker {
	var out []*Tracker
	for _, nd := range cl.nodes {
		if nd.tracker != nil && !slices.Contains(m.masters, nd) {
			out = append(out, nd.tracker)
			nd.tracker, nd.up = nil, false
		}
	}
	return out
}

// startTracker starts a tracking session on nd whose callbacks act only while it is nd's current one (the caller
// makes it so under cl.mu).
func (cl *Cluster) startTracker(nd *clusterNode, prefixes []string) *Tracker {
	topt := tierTracker(&cl.opt, nd.addr, prefixes, cl.watch)
	topt.Logger = cl.log
	return startOwned(topt,
		func(t *Tracker, runID string) { cl.trackerUp(nd, t, runID) },
		func(t *Tracker, err error) { cl.trackerLost(nd, t, err) })
}

// trackerUp and trackerLost tell the Watcher, once the Cluster's lock is released, that a master's tracking
// connection came up or was lost: as in front of a single node, what was written meanwhile was not announced.
func (cl *Cluster) trackerUp(nd *clusterNode, t *Tracker, runID string) {
	if cl.noteTrackerUp(nd, t, runID) {
		if w := cl.watch(); w != nil {
			w.Tracking(true)
		}
	}
}

func (cl *Cluster) trackerLost(nd *clusterNode, t *Tracker, err error) {
	if cl.noteTrackerLost(nd, t, err) {
		if w := cl.watch(); w != nil {
			w.Tracking(false)
		}
	}
}

// noteTrackerUp records that nd's tracking came up, and reports whether t is nd's current tracker.
func (cl *Cluster) noteTrackerUp(nd *clusterNode, t *Tracker, runID string) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if nd.tracker != t {
		return false
	}
	if nd.runID != "" && runID != nd.runID {
		// A restarted or restored master: what was cached from its slots may be anything now.
		slots := cl.smap.Load().slotsOf(nd)
		if cl.parts != nil {
			cl.parts.FlushPartitions(slots) // partition s is slot s
		} else {
			cl.opt.Cache.Flush()
		}
		cl.log.Warn("upstream: the cluster master that came back is another server (run_id changed): its slots flushed",
			"addr", nd.addr, "slots", len(slots), "old_run_id", nd.runID, "run_id", runID)
	}
	nd.runID, nd.up = runID, true
	cl.retrustLocked()
	cl.log.Info("upstream: tracking up on cluster master", "addr", nd.addr, "run_id", runID)
	return true
}

// noteTrackerLost records that nd's tracking was lost, and reports whether t is nd's current tracker.
func (cl *Cluster) noteTrackerLost(nd *clusterNode, t *Tracker, err error) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if nd.tracker != t {
		return false
	}
	nd.up = false
	cl.retrustLocked()
	if err != nil {
		cl.log.Warn("upstream: tracking lost on cluster master: its slots are untrusted", "addr", nd.addr, "err", err)
		cl.refreshSoon() // a failed master is replaced by its replica: learn it soon
	}
	return true
}

// Tracking reports whether tracking is configured, and whether it is established for every slot.
func (cl *Cluster) Tracking() (enabled, up bool) {
	if !cl.opt.Tracking {
		return false, false
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return true, cl.untrusted == 0
}

// Barrier waits until every invalidation for what any master has executed so far has been applied: a PING on
// each master's tracking connection, in parallel. It fails when tracking is off or down on any master.
func (cl *Cluster) Barrier(ctx context.Context) error {
	cl.mu.Lock()
	m := cl.smap.Load()
	ts := make([]*Tracker, 0, len(m.masters))
	for _, nd := range m.masters {
		if nd.tracker == nil || !nd.up {
			cl.mu.Unlock()
			return ErrTrackingDown
		}
		ts = append(ts, nd.tracker)
	}
	cl.mu.Unlock()
	return barrierAll(ctx, ts)
}

// barrierAll is Tracker.Barrier on every one of ts, in parallel; it fails when any of them does, and with
// ErrTrackingDown when there is none.
func barrierAll(ctx context.Context, ts []*Tracker) error {
	if len(ts) == 0 {
		return ErrTrackingDown
	}
	errs := make([]error, len(ts))
	var wg sync.WaitGroup
	for i, t := range ts {
		wg.Go(func() { errs[i] = t.Barrier(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Prefixes returns the BCAST prefixes tracking is established with, sorted; nil without tracking.
func (cl *Cluster) Prefixes() []string {
	if !cl.opt.Tracking {
		return nil
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return append([]string(nil), cl.prefix...)
}

// SetPrefixes is Client.SetPrefixes for every master: a second tracking session with the new prefixes is
// established on each master before the old one is closed (make before break). When the new sessions are not all
// established before ctx ends while the old ones are up, the old ones stay, and the error says so.
func (cl *Cluster) SetPrefixes(ctx context.Context, prefixes []string) error {
	cl.trackMu.Lock()
	defer cl.trackMu.Unlock()
	next := sortedCopy(prefixes)
	cl.mu.Lock()
	if !cl.opt.Tracking || slices.Equal(next, cl.prefix) {
		cl.prefix = next
		cl.mu.Unlock()
		return nil
	}
	type swap struct {
		nd       *clusterNode
		old, new *Tracker
	}
	var swaps []swap
	wait := true
	for _, nd := range cl.smap.Load().masters {
		if nd.tracker == nil {
			continue
		}
		wait = wait && nd.up
		swaps = append(swaps, swap{nd: nd, old: nd.tracker, new: cl.startTracker(nd, next)})
	}
	cl.mu.Unlock()
	if wait {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for _, sw := range swaps {
			for !sw.new.Up() {
				select {
				case <-ctx.Done():
					for _, s := range swaps {
						s.new.Close()
					}
					return fmt.Errorf("upstream: tracking with the new prefixes was not established on %s: %w",
						sw.nd.addr, ctx.Err())
				case <-tick.C:
				}
			}
		}
	}
	var closing []*Tracker
	cl.mu.Lock()
	for _, sw := range swaps {
		if sw.nd.tracker != sw.old {
			closing = append(closing, sw.new) // the node stopped being a master meanwhile
			continue
		}
		// The new session's OnUp or OnLost may have run while it was not current yet: decide from its state now.
		sw.nd.tracker, sw.nd.up = sw.new, sw.new.Up()
		closing = append(closing, sw.old)
	}
	cl.prefix = next
	cl.retrustLocked()
	cl.mu.Unlock()
	for _, t := range closing {
		t.Close()
	}
	cl.log.Info("upstream: tracking prefixes changed on every cluster master", "prefixes", len(next))
	return nil
}

// retrustLocked tells the tier which slots are trusted: those whose master's tracking is up. Caller holds cl.mu.
func (cl *Cluster) retrustLocked() {
	if !cl.opt.Tracking {
		return
	}
	m := cl.smap.Load()
	var on, off []int
	for s := range m.owner {
		want := m.owner[s] != nil && m.owner[s].up
		if want != cl.trusted[s] {
			cl.trusted[s] = want
			if want {
				on = append(on, s)
				cl.untrusted--
			} else {
				off = append(off, s)
				cl.untrusted++
			}
		}
	}
	switch {
	case cl.parts != nil: // partition s is slot s
		if len(off) > 0 {
			cl.parts.SetPartitionsTrusted(off, false)
		}
		if len(on) > 0 {
			cl.parts.SetPartitionsTrusted(on, true)
		}
	case len(on)+len(off) > 0:
		// A tier without partitions is trusted only while every master's tracking is up.
		cl.opt.Cache.SetTrusted(cl.untrusted == 0)
	}
}
