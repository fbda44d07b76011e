package proxy

import (
	"bytes"
	"fmt"
	"sync"

	"featcache/config"
	"featcache/internal/resp"
	"featcache/localcache"
	"featcache/upstream"
)

// Versioned snapshots: a policy with snapshot_pointer serves a client's logical key K as the physical key
// K + ":" + version, where version is the value of the pointer key. A batch pipeline writes the keys of version
// v8, validates them, and flips the pointer from v7 to v8: every reader switches at once (the pointer is cached
// and invalidated like any key), and flipping it back is the rollback.
//
// The pointer is resolved once per command, so one MGET is answered from one version even while the pointer
// flips. Cached reads (GET, MGET) resolve it in the read path under the logical key's policy; every other command
// with keys of such a policy (writes, forwarded reads, queued transactions) has them rewritten before it runs.

// errSnapshotPointer is the error for a pointer that cannot be read.
type errSnapshotPointer struct {
	pointer, policy, why string
}

func (e errSnapshotPointer) Error() string {
	return fmt.Sprintf("ERR featcache: snapshot pointer '%s' of policy '%s' %s", e.pointer, e.policy, e.why)
}

// versions remembers the versions resolved for the current command, by policy, so each policy's pointer is read
// once per command.
type versions struct {
	idx []int
	ver [][]byte
}

func (v *versions) reset() { v.idx, v.ver = v.idx[:0], v.ver[:0] }

// snapshotVersion returns the current version of pol's snapshot: from the local tier when the pointer is cached,
// otherwise from the upstream through the pointer's own fill (one per pointer and generation, as for any key).
// The version's bytes live in the client's batch arena.
func (c *client) snapshotVersion(pol *config.Policy, ps *policySet) ([]byte, error) {
	for i, idx := range c.vers.idx {
		if idx == pol.Index {
			return c.vers.ver[i], nil
		}
	}
	ptr := ps.pointers[pol.Index]
	lp := &ps.local[pol.Index]
	var look localcache.Lookup
	mark := len(c.arena)
	c.arena, look = c.srv.cache.AppendGet(c.arena, ptr, lp, c.clock(), false)
	var ver []byte
	if look.State != localcache.StateMiss {
		v, isNil, _ := resp.BulkPayload(c.arena[mark:])
		if isNil {
			return nil, errSnapshotPointer{string(ptr), pol.Name, "does not exist"}
		}
		if look.State == localcache.StateStale || look.State == localcache.StateUnverified && c.srv.revalidate.allow() {
			c.refresh(ptr, lp)
		}
		ver = v
	} else {
		res := c.fetchPointer(ptr, lp)
		switch {
		case res.Err != nil:
			return nil, errSnapshotPointer{string(ptr), pol.Name, "cannot be read: " + upstreamErrorText(res.Err)}
		case res.Reply != nil:
			return nil, errSnapshotPointer{string(ptr), pol.Name, "is not a string: " + string(bytes.TrimSpace(res.Reply))}
		case res.Nil:
			return nil, errSnapshotPointer{string(ptr), pol.Name, "does not exist"}
		}
		c.arena = append(c.arena, res.Value...)
		ver = c.arena[len(c.arena)-len(res.Value):]
	}
	c.vers.idx = append(c.vers.idx, pol.Index)
	c.vers.ver = append(c.vers.ver, ver)
	return ver, nil
}

// fetchPointer reads a pointer that is not cached, waiting for its fill.
func (c *client) fetchPointer(ptr []byte, lp *localcache.Policy) localcache.Result {
	f, leader := c.srv.cache.Acquire(ptr)
	if leader {
		var look localcache.Lookup
		var buf []byte
		if buf, look = c.srv.cache.AppendGet(nil, ptr, lp, c.clock(), false); look.State != localcache.StateMiss {
			c.srv.cache.Complete(f, servedResult(buf), lp)
		} else {
			call := pointerCalls.Get().(*upstream.Call)
			var out [1]upstream.Fetched
			got, err := c.srv.up.Fetch(call, [][]byte{ptr}, out[:0])
			c.hasWaited()
			c.srv.stats.UpstreamReads.Add(1)
			res := localcache.Result{Err: err}
			if len(got) == 1 {
				res = c.srv.fetchedResult(got[0])
			}
			c.srv.cache.Complete(f, res, lp)
			pointerCalls.Put(call)
		}
	}
	<-f.Done()
	return f.Result()
}

var pointerCalls = sync.Pool{New: func() any { return upstream.NewCall() }}

// physicalKey returns logical + ":" + version in the client's batch arena.
func (c *client) physicalKey(logical, version []byte) []byte {
	start := len(c.arena)
	c.arena = append(c.arena, logical...)
	c.arena = append(c.arena, ':')
	c.arena = append(c.arena, version...)
	return c.arena[start:len(c.arena):len(c.arena)]
}

// snapshotKey returns the physical key of a cached read's logical key under pol's snapshot: the version its pointer
// names now. When the version cannot be read it answers the client with why and returns false.
func (c *client) snapshotKey(pol *config.Policy, ps *policySet, logical []byte) ([]byte, bool) {
	ver, err := c.snapshotVersion(pol, ps)
	if err != nil {
		c.srv.stats.SnapshotErrors.Add(1)
		c.errorReply(err.Error())
		return nil, false
	}
	return c.physicalKey(logical, ver), true
}

// rewriteSnapshotKeys returns cmd with every key of a snapshot policy replaced by its physical key, or cmd itself
// when it has none. The rewritten command lives in the client's batch scratch space.
func (c *client) rewriteSnapshotKeys(cmd *resp.Command, tc *command, ps *policySet) (*resp.Command, error) {
	if tc == nil || tc.info == nil {
		return cmd, nil
	}
	idx, _ := tc.info.KeyIndexes(cmd.Args, c.keyIdx[:0])
	c.keyIdx = idx
	rewritten := false
	for _, i := range idx {
		pol := ps.matcher.Match(cmd.Args[i])
		if pol == nil || pol.SnapshotPointer == "" {
			continue
		}
		ver, err := c.snapshotVersion(pol, ps)
		if err != nil {
			return nil, err
		}
		if !rewritten {
			c.rw.Args = append(c.rw.Args[:0], cmd.Args...)
			c.rw.Raw = nil
			rewritten = true
		}
		c.rw.Args[i] = c.physicalKey(cmd.Args[i], ver)
	}
	if !rewritten {
		return cmd, nil
	}
	return &c.rw, nil
}
