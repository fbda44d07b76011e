package proxy

import (
	"crypto/tls"
	"net"
	"time"
)

// watchdog closes clients that have been idle longer than limits.idle_timeout, and clients a write to which has
// made no progress for limits.output_timeout. Clients mark their waits with sequence numbers (odd while waiting)
// rather than timestamps, so the hit path reads no clock for it; the watchdog notes when it first saw each wait.
func (s *Server) watchdog() {
	lim := &s.opt.Config.Limits
	period := lim.OutputTimeout
	if lim.IdleTimeout > 0 {
		period = min(period, lim.IdleTimeout)
	}
	s.every(min(max(period/4, 5*time.Millisecond), time.Second), func() {
		now := time.Now()
		s.mu.Lock()
		for c := range s.conns {
			if over(&c.wdWrite, c.wseq.Load(), now, lim.OutputTimeout) {
				s.stats.OutputTimeouts.Add(1)
				s.log.Info("client disconnected", "client", c.id, "addr", c.nc.RemoteAddr().String(),
					"reason", "replies left unread for limits.output_timeout", "output_timeout", lim.OutputTimeout)
				c.closeRaw()
				continue
			}
			if lim.IdleTimeout > 0 && over(&c.wdIdle, c.rseq.Load(), now, lim.IdleTimeout) {
				s.stats.IdleTimeouts.Add(1)
				s.log.Debug("client disconnected", "client", c.id, "reason", "idle for limits.idle_timeout")
				c.closeRaw()
			}
		}
		s.mu.Unlock()
	})
}

// every calls f every period until the server stops; it is the body of one of the server's goroutines (s.wg), the
// watchdog's, the heap watcher's or the role refresher's.
func (s *Server) every(period time.Duration, f func()) {
	defer s.wg.Done()
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		f()
	}
}

// closeRaw closes a client connection without writing anything, also a TLS one (whose Close would send a
// close_notify alert and could wait on a client that does not read), and without waiting for the client's
// goroutine: a plain socket's client may be running a batch inside the socket's read (client.readDirect), and
// Close waits for every read in progress to end. The socket's waits end at once all the same (its reads and writes
// fail); the descriptor is closed, and the client sees the connection end, once the batch is over.
func closeRaw(nc net.Conn) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	go nc.Close()
}

// waitMark is the watchdog's note of one kind of wait of one client: the wait's sequence number and when the
// watchdog first saw it. Only the watchdog goroutine touches it.
type waitMark struct {
	seq   uint64
	since time.Time
}

// over reports whether the wait numbered seq (odd while waiting) has lasted longer than d.
func over(m *waitMark, seq uint64, now time.Time, d time.Duration) bool {
	if seq&1 == 0 {
		return false
	}
	if seq != m.seq {
		m.seq, m.since = seq, now
		return false
	}
	return now.Sub(m.since) > d
}

// stopWatchdog marks the server closed and stops the watchdog once. The caller holds s.mu.
func (s *Server) stopWatchdog() {
	if !s.closed {
		close(s.stop)
	}
	s.closed = true
}
