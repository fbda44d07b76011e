package upstream

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"featcache/internal/resp"
)

// Redis Sentinel: the Client asks the sentinels where the primary of a master set is, checks that the node it
// names answers ROLE as a master, and points everything at it (switchPrimary). It then follows failovers: a
// subscription to +switch-master on one sentinel reports them as they happen, and the sentinels are asked again
// every SentinelOptions.Interval, and at once when the upstream fails or a shared connection is answered READONLY.

const (
	// DefaultSentinelInterval is how often the sentinels are asked again when SentinelOptions.Interval is zero.
	DefaultSentinelInterval = time.Second

	// sentinelKeepAlive is how long the +switch-master subscription may stay silent before it is PINGed; a
	// sentinel that leaves the PING unanswered as long again is given up for the next one.
	sentinelKeepAlive = 5 * time.Second
	// minCheckGap spaces the checks that upstream failures and READONLY replies ask for, which come in bursts.
	minCheckGap = 100 * time.Millisecond
)

// ErrNoPrimary means no sentinel named a primary that answers ROLE as a master.
var ErrNoPrimary = errors.New("upstream: sentinel: no primary found")

// SentinelOptions configures how a Client finds its primary through Redis Sentinel.
type SentinelOptions struct {
	// MasterSet is the name the sentinels monitor the primary under ("sentinel monitor NAME ..."). Required.
	MasterSet string
	// Addresses are the sentinels' host:port. Required: at least one.
	Addresses []string
	// Password authenticates to the sentinels (their requirepass), which is not the data nodes' password
	// (Options.Password). Empty means no AUTH. Sentinel connections use Options.TLS like every other.
	Password string
	// Interval is how often the sentinels are asked again, besides the +switch-master subscription. If zero,
	// DefaultSentinelInterval is used.
	Interval time.Duration
}

// sentinel follows the primary of a master set for a Client.
type sentinel struct {
	c     *Client
	opt   SentinelOptions
	log   *slog.Logger
	pools []*Pool // one per sentinel, with one shared connection each

	kick     chan struct{} // a check is wanted now (the upstream failed, or answered READONLY)
	announce chan string   // primaries announced by +switch-master
	stop     chan struct{}
	wg       sync.WaitGroup

	lastErr string // the last check failure logged: a failure that persists is logged once
}

// newSentinel prepares a sentinel watch for c; start begins it.
func newSentinel(c *Client, opt SentinelOptions) (*sentinel, error) {
	if opt.MasterSet == "" {
		return nil, errors.New("upstream: sentinel: MasterSet is required")
	}
	if len(opt.Addresses) == 0 {
		return nil, errors.New("upstream: sentinel: no sentinel address")
	}
	if opt.Interval <= 0 {
		opt.Interval = DefaultSentinelInterval
	}
	s := &sentinel{
		c: c, opt: opt, log: c.log,
		kick: make(chan struct{}, 1), announce: make(chan string, 4), stop: make(chan struct{}),
	}
	for _, a := range opt.Addresses {
		s.pools = append(s.pools, NewPool(PoolOptions{
			Addr: a, Password: opt.Password, Conns: 1, Timeout: c.opt.Timeout, ClientName: "featcache-sentinel",
			TLS: c.opt.TLS,
		}))
	}
	return s, nil
}

// start looks for the primary once, so that a Client whose sentinels answer starts with its primary known, then
// follows it in the background.
func (s *sentinel) start() {
	s.check()
	s.wg.Add(2)
	go s.run()
	go s.subscribe()
}

// close stops the watch and closes its sentinel connections.
func (s *sentinel) close() {
	close(s.stop)
	s.wg.Wait()
	for _, p := range s.pools {
		p.Close()
	}
}

// recheck asks for a check now, without waiting.
func (s *sentinel) recheck() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *sentinel) run() {
	defer s.wg.Done()
	tick := time.NewTicker(s.opt.Interval)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-s.stop:
			return
		case addr := <-s.announce:
			s.follow(addr)
		case <-s.kick:
			if wait := minCheckGap - time.Since(last); wait > 0 {
				select {
				case <-s.stop:
					return
				case <-time.After(wait):
				}
			}
			s.check()
		case <-tick.C:
			s.check()
		}
		last = time.Now()
	}
}

// check asks the sentinels where the primary is and switches to it when it moved and answers as a master.
func (s *sentinel) check() {
	addr, err := s.resolve()
	if err == nil && addr != s.c.Pool.Addr() {
		err = s.verify(addr)
		if err == nil {
			s.c.switchPrimary(addr)
		}
	}
	if err == nil {
		s.lastErr = ""
		return
	}
	if msg := err.Error(); msg != s.lastErr {
		s.lastErr = msg
		s.log.Warn("upstream: sentinel: primary not confirmed", "master_set", s.opt.MasterSet,
			"current", s.c.Pool.Addr(), "err", err)
	}
}

// follow switches to a primary a sentinel announced, once it answers as a master; otherwise the next check
// decides.
func (s *sentinel) follow(addr string) {
	if addr == s.c.Pool.Addr() {
		return
	}
	if err := s.verify(addr); err != nil {
		s.log.Warn("upstream: sentinel: announced primary not confirmed", "master_set", s.opt.MasterSet,
			"addr", addr, "err", err)
		return
	}
	s.c.switchPrimary(addr)
}

// resolve asks every sentinel at once where the primary is, and returns the answer of the one with the highest
// config epoch: the most recent failover any of them knows of. A sentinel that has not heard of a failover yet
// (they learn from each other within seconds) thus never sends featcache back to a demoted primary that still
// answers as a master. Ties go to the sentinel listed first.
func (s *sentinel) resolve() (string, error) {
	type answer struct {
		addr  string
		epoch int64
		err   error
	}
	answers := make([]answer, len(s.pools))
	req := resp.AppendCommand(nil, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.opt.MasterSet)
	req = resp.AppendCommand(req, "SENTINEL", "MASTER", s.opt.MasterSet)
	var wg sync.WaitGroup
	for i, p := range s.pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			call := NewCall()
			a := &answers[i]
			if a.err = p.Do(call, req, 2); a.err == nil {
				a.addr, a.epoch, a.err = parseSentinelAnswer(call.Frame(0), call.Frame(1))
			}
			if a.err != nil {
				a.err = fmt.Errorf("sentinel %s: %w", p.Addr(), a.err)
			}
		}()
	}
	wg.Wait()
	best := -1
	var errs []error
	for i, a := range answers {
		switch {
		case a.err != nil:
			errs = append(errs, a.err)
		case best < 0 || a.epoch > answers[best].epoch:
			best = i
		}
	}
	if best < 0 {
		return "", fmt.Errorf("%w for master set %q: %w", ErrNoPrimary, s.opt.MasterSet, errors.Join(errs...))
	}
	return answers[best].addr, nil
}

// parseSentinelAnswer reads the replies to SENTINEL GET-MASTER-ADDR-BY-NAME and SENTINEL MASTER: the primary's
// host:port and the master set's config epoch.
func parseSentinelAnswer(addrFrame, masterFrame []byte) (addr string, epoch int64, err error) {
	hostPort, err := resp.ParseBulkArray(addrFrame, nil)
	if err != nil {
		return "", 0, err
	}
	if len(hostPort) != 2 {
		return "", 0, errors.New("does not know this master set")
	}
	fields, err := resp.ParseBulkArray(masterFrame, nil)
	if err != nil {
		return "", 0, fmt.Errorf("SENTINEL MASTER: %w", err)
	}
	for i := 0; i+1 < len(fields); i += 2 {
		if string(fields[i]) == "config-epoch" {
			if epoch, err = strconv.ParseInt(string(fields[i+1]), 10, 64); err != nil {
				return "", 0, fmt.Errorf("SENTINEL MASTER: config-epoch %q", fields[i+1])
			}
		}
	}
	return net.JoinHostPort(string(hostPort[0]), string(hostPort[1])), epoch, nil
}

// verify checks that addr answers ROLE as a master, on a connection of its own with the upstream's credentials.
// A user that may not run ROLE (NOPERM) cannot tell: the sentinels' word is taken.
func (s *sentinel) verify(addr string) error {
	o := s.c.opt
	p := NewPool(PoolOptions{Addr: addr, Username: o.Username, Password: o.Password, Conns: 1, Timeout: o.Timeout,
		ClientName: "featcache", TLS: o.TLS})
	defer p.Close()
	conn, err := p.Dedicated()
	if err != nil {
		return err
	}
	defer conn.Close()
	call := NewCall()
	if err := conn.Do(call, resp.AppendCommand(nil, "ROLE"), 1, time.Now().Add(o.Timeout)); err != nil {
		return fmt.Errorf("ROLE on %s: %w", addr, err)
	}
	role, err := parseRole(call.Frame(0))
	switch {
	case err != nil && strings.HasPrefix(err.Error(), "NOPERM"):
		return nil
	case err != nil:
		return fmt.Errorf("ROLE on %s: %w", addr, err)
	case role != "master":
		return fmt.Errorf("%s answers ROLE as %s, not master", addr, role)
	}
	return nil
}

// parseRole returns the first element of a ROLE reply: master, slave or sentinel.
func parseRole(frame []byte) (string, error) {
	if len(frame) > 0 && frame[0] == resp.TypeError {
		return "", resp.ParseError(frame)
	}
	_, body, ok := resp.ArrayHeader(frame)
	if !ok {
		return "", fmt.Errorf("%w: ROLE replied %q", resp.ErrBadFrame, truncate(frame, 64))
	}
	role, isNil, ok := resp.BulkPayload(body)
	if !ok || isNil {
		return "", fmt.Errorf("%w: ROLE replied %q", resp.ErrBadFrame, truncate(frame, 64))
	}
	return string(role), nil
}

// subscribe keeps a +switch-master subscription on one sentinel, moving to the next when it is lost; after each
// loss a check runs at once, since an announcement may have been missed meanwhile.
func (s *sentinel) subscribe() {
	defer s.wg.Done()
	for i := 0; ; i = (i + 1) % len(s.pools) {
		err := s.listen(s.pools[i])
		select {
		case <-s.stop:
			return
		default:
		}
		s.log.Debug("upstream: sentinel subscription ended", "sentinel", s.pools[i].Addr(), "err", err)
		s.recheck()
		select {
		case <-s.stop:
			return
		case <-time.After(min(s.opt.Interval, time.Second)):
		}
	}
}

// listen subscribes to +switch-master on one sentinel and hands the primaries it announces for the master set to
// run, until the connection fails or the watch stops.
func (s *sentinel) listen(p *Pool) error {
	conn, err := p.Dedicated()
	if err != nil {
		return err
	}
	defer conn.Close()
	ended := make(chan struct{})
	defer close(ended)
	go func() {
		select {
		case <-s.stop:
			conn.Close() // ends the ReadFrame below
		case <-ended:
		}
	}()
	if err := conn.Write(resp.AppendCommand(nil, "SUBSCRIBE", "+switch-master")); err != nil {
		return err
	}
	var frame []byte
	pinged := false
	for {
		frame, err = conn.ReadFrame(frame[:0], time.Now().Add(sentinelKeepAlive))
		if errors.Is(err, ErrTimeout) && !pinged {
			pinged = true
			if err := conn.Write(resp.AppendCommand(nil, "PING")); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		pinged = false
		if len(frame) > 0 && frame[0] == resp.TypeError {
			return resp.ParseError(frame)
		}
		// ["message", "+switch-master", "<name> <old ip> <old port> <new ip> <new port>"]; the subscription's
		// confirmation and PING's reply have other shapes.
		msg, err := resp.ParseBulkArray(frame, nil)
		if err != nil || len(msg) != 3 || string(msg[0]) != "message" {
			continue
		}
		f := strings.Fields(string(msg[2]))
		if len(f) != 5 || f[0] != s.opt.MasterSet {
			continue
		}
		addr := net.JoinHostPort(f[3], f[4])
		s.log.Info("upstream: sentinel announced a new primary", "master_set", s.opt.MasterSet,
			"sentinel", p.Addr(), "old", net.JoinHostPort(f[1], f[2]), "new", addr)
		select {
		case s.announce <- addr:
		default: // run is behind: its next check asks the sentinels anyway
		}
	}
}

// switchPrimary points the Client at a new primary: the pool, its dedicated connections and tracking.
//
// Nothing cached from the old primary is served once this begins: the old one may hold writes the new one never
// received (replication is asynchronous), so the switch flushes the local tier, as tracking would on the new
// server's run_id. In order: tracking is detached and the tier untrusted (nothing is stored, flush policies'
// entries are not served), the tier flushed (nor are revalidate and serve_stale ones: a failed-over server means
// flush), the pool retargeted (connections to the old primary closed, calls in flight on them and dedicated
// sessions failed), the tier flushed again (a fill that read the old primary meanwhile is never stored, also
// without tracking), and tracking started on the new primary; the tier is trusted again when it is established.
func (c *Client) switchPrimary(addr string) {
	c.trackMu.Lock()
	defer c.trackMu.Unlock()
	old := c.Pool.Addr()
	if addr == old {
		return
	}
	cache := c.opt.Cache
	c.curMu.Lock()
	oldTracker := c.tracker
	c.tracker = nil // its callbacks act only while it is current
	if c.opt.Tracking {
		cache.SetTrusted(false)
	}
	c.curMu.Unlock()
	if old != "" {
		cache.Flush()
		if w := c.watching(); w != nil {
			w.Tracking(false) // what the old primary announced is no longer the store's state
		}
	}
	c.Pool.Retarget(addr)
	if old != "" {
		cache.Flush()
		c.log.Warn("upstream: following the new primary: connections to the old one closed, local tier flushed",
			"old", old, "new", addr)
	} else {
		c.log.Info("upstream: primary found through sentinel", "addr", addr)
	}
	if c.opt.Tracking {
		c.curMu.Lock()
		c.tracker = c.startTracker(c.prefix) // its OnUp waits for curMu, and then finds it current
		c.curMu.Unlock()
	}
	if oldTracker != nil {
		oldTracker.Close()
	}
}
