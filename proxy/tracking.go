package proxy

import (
	"bytes"
	"context"
	"slices"
	"strings"

	"featcache/internal/commands"
	"featcache/internal/resp"
)

// trackState is one client's tracking. Its fields are guarded by clientTracking.mu, except caching, which only the
// client's goroutine reads and writes.
type trackState struct {
	c                            *client
	bcast, optin, optout, noloop bool
	redirID                      int64
	redir                        *client // the redirect target; nil without one, or once it left
	broken                       bool    // an invalidation found the redirect target gone
	prefixes                     []string
	caching                      bool // CLIENT CACHING yes|no, for the next command
}

// trackingSupported reports whether featcache can offer CLIENT TRACKING: with upstream tracking on, whose
// invalidations it receives (from the single node, or from every master of a Redis Cluster). Without tracking
// (TTL-only) it is refused.
func (c *client) trackingSupported() bool {
	enabled, _ := c.srv.up.Tracking()
	return enabled
}

// cmdClientTracking answers CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX p]... [BCAST] [OPTIN] [OPTOUT] [NOLOOP]
// with Redis 7.0's checks, in Redis's order, and its error texts.
func (c *client) cmdClientTracking(args [][]byte) {
	if !c.trackingSupported() {
		c.srv.stats.Refused.Add(1)
		c.errorReply("ERR 'client|tracking' is not supported by featcache with upstream.tracking off: it has no invalidation stream to serve it")
		return
	}
	var (
		redirID                      int64
		redir                        *client
		bcast, optin, optout, noloop bool
		prefixes                     []string
	)
	for j := 3; j < len(args); j++ {
		more := len(args) - 1 - j
		switch {
		case bytes.EqualFold(args[j], []byte("redirect")) && more > 0:
			j++
			if redirID != 0 {
				c.errorReply("ERR A client can only redirect to a single other client")
				return
			}
			id, ok := resp.ParseInt(args[j])
			if !ok {
				c.errorReply("ERR value is not an integer or out of range")
				return
			}
			redirID = id
			if redir = c.srv.clientByID(id); redir == nil {
				c.errorReply("ERR The client ID you want redirect to does not exist")
				return
			}
		case bytes.EqualFold(args[j], []byte("bcast")):
			bcast = true
		case bytes.EqualFold(args[j], []byte("optin")):
			optin = true
		case bytes.EqualFold(args[j], []byte("optout")):
			optout = true
		case bytes.EqualFold(args[j], []byte("noloop")):
			noloop = true
		case bytes.EqualFold(args[j], []byte("prefix")) && more > 0:
			j++
			prefixes = append(prefixes, string(args[j]))
		default:
			c.errorReply("ERR syntax error")
			return
		}
	}
	switch {
	case bytes.EqualFold(args[2], []byte("off")):
		c.disableTracking()
		c.simpleReply("OK")
		return
	case !bytes.EqualFold(args[2], []byte("on")):
		c.errorReply("ERR syntax error")
		return
	}
	st := c.trk
	switch {
	case !bcast && len(prefixes) > 0:
		c.errorReply("ERR PREFIX option requires BCAST mode to be enabled")
		return
	case st != nil && st.bcast != bcast:
		c.errorReply("ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then " +
			"re-enabling it with a different mode.")
		return
	case bcast && (optin || optout):
		c.errorReply("ERR OPTIN and OPTOUT are not compatible with BCAST")
		return
	case optin && optout:
		c.errorReply("ERR You can't specify both OPTIN mode and OPTOUT mode")
		return
	case st != nil && (optin && st.optout || optout && st.optin):
		c.errorReply("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then " +
			"re-enabling it with a different mode.")
		return
	}
	if bcast {
		if msg := prefixCollision(st, prefixes); msg != "" {
			c.errorReply(msg)
			return
		}
	}
	c.srv.ctrack.enable(c, trackState{bcast: bcast, optin: optin, optout: optout, noloop: noloop,
		redirID: redirID, redir: redir, prefixes: prefixes})
	c.simpleReply("OK")
}

// prefixCollision returns Redis's error for BCAST prefixes that overlap (one is a prefix of the other) with the
// client's current ones or with each other, or "".
func prefixCollision(st *trackState, prefixes []string) string {
	for i, p := range prefixes {
		if st != nil {
			for _, old := range st.prefixes {
				if strings.HasPrefix(old, p) || strings.HasPrefix(p, old) {
					return "ERR Prefix '" + p + "' overlaps with an existing prefix '" + old + "'. " +
						"Prefixes for a single client must not overlap."
				}
			}
		}
		for _, q := range prefixes[i+1:] {
			if strings.HasPrefix(q, p) || strings.HasPrefix(p, q) {
				return "ERR Prefix '" + p + "' overlaps with another provided prefix '" + q + "'. " +
					"Prefixes for a single client must not overlap."
			}
		}
	}
	return ""
}

// cmdClientCaching answers CLIENT CACHING YES|NO: in OPTIN mode YES tracks the keys of the next command, in OPTOUT
// mode NO leaves them untracked.
func (c *client) cmdClientCaching(args [][]byte) {
	st := c.trk
	if st == nil {
		c.errorReply("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or " +
			"OPTOUT mode enabled")
		return
	}
	switch {
	case bytes.EqualFold(args[2], []byte("yes")):
		if !st.optin {
			c.errorReply("ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.")
			return
		}
	case bytes.EqualFold(args[2], []byte("no")):
		if !st.optout {
			c.errorReply("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.")
			return
		}
	default:
		c.errorReply("ERR syntax error")
		return
	}
	st.caching = true
	c.simpleReply("OK")
}

// cmdClientGetredir answers the client's redirect id: 0 without one, -1 without tracking.
func (c *client) cmdClientGetredir(args [][]byte) {
	if c.trk == nil {
		c.intReply(-1)
		return
	}
	c.srv.ctrack.mu.Lock()
	id := c.trk.redirID
	c.srv.ctrack.mu.Unlock()
	c.intReply(id)
}

// cmdClientTrackinginfo answers as Redis 7.0 does: flags, redirect and prefixes.
func (c *client) cmdClientTrackinginfo(args [][]byte) {
	st := c.trk
	if st == nil {
		c.trackingInfoReply([]string{"off"}, -1, nil)
		return
	}
	t := c.srv.ctrack
	t.mu.Lock()
	flags := []string{"on"}
	for _, f := range []struct {
		set  bool
		name string
	}{
		{st.bcast, "bcast"},
		{st.optin, "optin"},
		{st.optin && st.caching, "caching-yes"},
		{st.optout, "optout"},
		{st.optout && st.caching, "caching-no"},
		{st.noloop, "noloop"},
		{st.broken, "broken_redirect"},
	} {
		if f.set {
			flags = append(flags, f.name)
		}
	}
	redir, prefixes := st.redirID, slices.Clone(st.prefixes)
	t.mu.Unlock()
	c.trackingInfoReply(flags, redir, prefixes)
}

// trackingInfoReply answers CLIENT TRACKINGINFO: a map (an array in RESP2) of flags, a set, redirect and
// prefixes, an array.
func (c *client) trackingInfoReply(flags []string, redir int64, prefixes []string) {
	c.mapReply(3)
	c.bulkStringReply("flags")
	c.setReply(len(flags))
	for _, f := range flags {
		c.bulkStringReply(f)
	}
	c.bulkStringReply("redirect")
	c.intReply(redir)
	c.bulkStringReply("prefixes")
	c.arrayReply(len(prefixes))
	for _, p := range prefixes {
		c.bulkStringReply(p)
	}
}

// disableTracking turns the client's tracking off (CLIENT TRACKING OFF, RESET).
func (c *client) disableTracking() {
	if c.trk != nil {
		c.srv.ctrack.disable(c)
	}
}

// trackCommand remembers the keys a read-only command reads, for a client tracking in the default mode, as Redis
// remembers them: unless OPTIN without CLIENT CACHING YES, or OPTOUT after CLIENT CACHING NO. It runs before the
// command, so that an invalidation that arrives while the command is answered is not missed.
func (c *client) trackCommand(args [][]byte, tc *command) {
	st := c.trk
	if st.bcast || tc == nil || tc.info == nil || !tc.info.Flags.Has(commands.FlagReadonly) ||
		tc.info.Flags.Has(commands.FlagPubSub) || !tc.info.ArityOK(len(args)) || st.optin && !st.caching ||
		st.optout && st.caching {
		return
	}
	keys, _ := tc.info.Keys(args, c.trkKeys[:0])
	c.trkKeys = keys[:0]
	if len(keys) > 0 {
		c.srv.ctrack.remember(c.id, keys)
	}
}

// trackCommandDone ends the effect of CLIENT CACHING once the command after it has run; inside MULTI it lasts until
// EXEC, and CLIENT commands keep it, as in Redis.
func (c *client) trackCommandDone(tc *command) {
	if st := c.trk; st != nil && st.caching && !c.tx.multi && (tc == nil || !strings.HasPrefix(tc.name, "client")) {
		st.caching = false
	}
}

// trackWrite prepares for a tracking client's own write, before it goes out (a transaction's writes at EXEC).
// Redis 7.0 defers the invalidations of a client's own write past the command, so they follow its reply (EXEC's,
// for a transaction): the client's push queue is held until its next flush (holdPushes), unless its pushes go to
// another connection (REDIRECT) or the write happens only when a blocking command is served. A NOLOOP client is
// not told of its own writes at all: the keys it writes are recorded, and the invalidations of those keys that
// arrive until the write has settled are not sent to it (see settleTracking); a write that never reached Redis is
// ended after its command (exec).
func (c *client) trackWrite(args [][]byte, tc *command) {
	st := c.trk
	if st == nil || tc == nil {
		return
	}
	if !st.noloop {
		if st.redirID == 0 && tc.class != classBlocking && !c.pushHold {
			c.holdPushes()
		}
		return
	}
	if tc.info == nil || !tc.info.ArityOK(len(args)) {
		return
	}
	keys, _ := tc.info.Keys(args, nil)
	if len(keys) == 0 {
		return
	}
	t := c.srv.ctrack
	t.mu.Lock()
	for _, k := range keys {
		key := string(k)
		t.writing[key] = append(t.writing[key], c.id)
		c.trkWriting = append(c.trkWriting, key)
	}
	t.mu.Unlock()
}

// settleTracking waits, after a write through featcache and before its reply, until both streams have delivered
// what Redis announced before it, and ends the write of a NOLOOP client (trackWrite). A stream that does not
// confirm within upstream.timeout is lost: its loss flushes the tracking clients. Redis announces nothing for
// SWAPDB: featcache sends the null invalidation for it.
func (c *client) settleTracking(tc *command) {
	t := c.srv.ctrack
	if tc.name == "swapdb" {
		t.Flushed()
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.srv.up.Timeout())
	defer cancel()
	t.mu.Lock()
	stream := t.stream
	t.mu.Unlock()
	done := make(chan struct{})
	if stream != nil {
		go func() {
			stream.Barrier(ctx)
			close(done)
		}()
	} else {
		close(done)
	}
	c.srv.up.Barrier(ctx)
	<-done
	if len(c.trkWriting) == 0 {
		return
	}
	t.mu.Lock()
	t.endWritesLocked(c)
	t.mu.Unlock()
}
