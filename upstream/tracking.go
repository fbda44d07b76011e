package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/rueidis"
)

// ErrTrackingDown means the tracking connection is not established, so no invalidation is being received.
var ErrTrackingDown = errors.New("upstream: tracking connection is down")

// TrackerOptions configures a Tracker. The callbacks are required; they run on the tracking connection's reader
// goroutine (OnInvalidate, OnFlush) or on the tracker's own goroutine (OnUp, OnLost) and must be quick.
type TrackerOptions struct {
	// Addr is the upstream node whose writes are tracked.
	Addr string
	// Username and Password authenticate the tracking connection.
	Username, Password string
	// TLS, if not nil, makes the tracking connection TLS with this configuration.
	TLS *tls.Config
	// Prefixes are the key prefixes to track in BCAST mode; they must not overlap. Empty or [""] tracks every key.
	Prefixes []string
	// Timeout bounds dialing and the health PING: a server that does not answer a PING within Timeout after
	// a second of silence counts as lost. If zero, DefaultTimeout is used.
	Timeout time.Duration

	// OnInvalidate receives the keys of an invalidation push. The slices are only valid during the call and must
	// not be modified.
	OnInvalidate func(keys [][]byte)
	// OnFlush is called for a null invalidation (FLUSHALL, FLUSHDB, SWAPDB): every cached key may have changed.
	OnFlush func()
	// OnUp is called each time tracking is (re-)established; from then on every write under Prefixes produces an
	// invalidation. runID is the server's run_id (INFO server), which changes when the server restarts.
	OnUp func(runID string)
	// OnLost is called when an established tracking connection is lost: invalidations may have been missed.
	OnLost func(err error)
	// Logger receives connection errors; if nil, slog.Default().
	Logger *slog.Logger
}

// Tracker keeps one connection to an upstream node with server-assisted invalidation in BCAST mode, through
// rueidis, and reconnects it when it drops.
//
// BCAST with prefixes derived from the policies means the server keeps no per-key table: every write under a
// tracked prefix is announced on this one connection, whichever connection read or wrote the key. featcache's reads
// and writes therefore travel on plain connections, and "is tracking intact" is one question about one connection
// per node. rueidis calls the invalidation hook with nil both for a null push and for a dead connection; the
// hook's error channel, closed before that nil call on a dead connection, tells the two apart.
type Tracker struct {
	opt    TrackerOptions
	log    *slog.Logger
	stop   chan struct{}
	exited chan struct{}

	mu sync.Mutex
	dc rueidis.DedicatedClient // the live tracking connection, nil while down
	up atomic.Bool
}

// StartTracker starts tracking in the background; OnUp reports when it is established.
func StartTracker(opt TrackerOptions) *Tracker {
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	t := &Tracker{opt: opt, log: opt.Logger, stop: make(chan struct{}), exited: make(chan struct{})}
	go t.run()
	return t
}

// Up reports whether tracking is established.
func (t *Tracker) Up() bool { return t.up.Load() }

// Close stops tracking and closes its connection.
func (t *Tracker) Close() {
	select {
	case <-t.stop:
	default:
		close(t.stop)
	}
	<-t.exited
}

// Barrier returns once every invalidation the server sent before it has been handed to OnInvalidate: it sends a
// PING on the tracking connection, and the server writes pushes and replies on one connection in order. A caller
// that saw a write's reply and then passes a Barrier knows the invalidations of that write have been applied.
func (t *Tracker) Barrier(ctx context.Context) error {
	t.mu.Lock()
	dc := t.dc
	t.mu.Unlock()
	if dc == nil {
		return ErrTrackingDown
	}
	if err := dc.Do(ctx, dc.B().Ping().Build()).Error(); err != nil {
		return fmt.Errorf("upstream: tracking barrier: %w", err)
	}
	return nil
}

func (t *Tracker) run() {
	defer close(t.exited)
	backoff := time.Duration(0)
	var client rueidis.Client
	defer func() {
		if client != nil {
			client.Close()
		}
	}()
	for {
		if backoff > 0 {
			select {
			case <-t.stop:
				return
			case <-time.After(backoff):
			}
		}
		backoff = min(max(2*backoff, 50*time.Millisecond), time.Second)
		if client == nil {
			var err error
			client, err = rueidis.NewClient(rueidis.ClientOption{
				InitAddress:       []string{t.opt.Addr},
				Username:          t.opt.Username,
				Password:          t.opt.Password,
				ClientName:        "featcache-tracking",
				ForceSingleClient: true,
				DisableCache:      true, // no tracking on rueidis's own shared connections; ours is explicit
				DisableRetry:      true,
				Dialer:            dialer(t.opt.Timeout),
				TLSConfig:         t.opt.TLS,
				ConnWriteTimeout:  t.opt.Timeout,
				BlockingPoolSize:  2,
			})
			if err != nil {
				t.log.Warn("tracking: cannot reach upstream", "addr", t.opt.Addr, "err", err)
				continue
			}
		}
		err := t.session(client)
		select {
		case <-t.stop:
			return
		default:
		}
		if err != nil {
			t.log.Warn("tracking: connection ended", "addr", t.opt.Addr, "err", err)
		}
	}
}

// session establishes tracking on one dedicated connection and returns when that connection ends.
func (t *Tracker) session(client rueidis.Client) error {
	dc, release := client.Dedicate()
	defer release()

	var lost atomic.Pointer[<-chan error]
	hook := func(msgs []rueidis.RedisMessage) {
		if msgs == nil {
			// nil is a null push (flush) unless the connection died: rueidis closes the error channel first.
			if ch := lost.Load(); ch != nil {
				select {
				case <-*ch:
					return
				default:
				}
				t.opt.OnFlush()
			}
			return
		}
		keys := make([][]byte, 0, len(msgs))
		for i := range msgs {
			if s, err := msgs[i].ToString(); err == nil {
				keys = append(keys, unsafe.Slice(unsafe.StringData(s), len(s)))
			}
		}
		t.opt.OnInvalidate(keys)
	}
	errc := dc.SetOnInvalidations(hook)
	if errc == nil {
		return errors.New("upstream: cannot install the invalidation hook")
	}
	lost.Store(&errc)

	ctx, cancel := context.WithTimeout(context.Background(), t.opt.Timeout)
	defer cancel()
	args := []string{"TRACKING", "ON", "BCAST"}
	for _, p := range t.opt.Prefixes {
		if p != "" {
			args = append(args, "PREFIX", p)
		}
	}
	if err := dc.Do(ctx, dc.B().Arbitrary("CLIENT").Args(args...).Build()).Error(); err != nil {
		return fmt.Errorf("CLIENT TRACKING ON BCAST: %w", err)
	}
	info, err := dc.Do(ctx, dc.B().Info().Section("server").Build()).ToString()
	if err != nil {
		return fmt.Errorf("INFO server: %w", err)
	}
	t.mu.Lock()
	t.dc = dc
	t.mu.Unlock()
	t.up.Store(true)
	t.opt.OnUp(infoField(info, "run_id"))
	t.log.Info("tracking: established", "addr", t.opt.Addr, "prefixes", len(t.opt.Prefixes))

	select {
	case err = <-errc:
	case <-t.stop:
		err = nil
	}
	t.mu.Lock()
	t.dc = nil
	t.mu.Unlock()
	t.up.Store(false)
	t.opt.OnLost(err)
	if err == nil {
		dc.Close()
	}
	return err
}

// infoField returns the value of field in an INFO reply ("field:value" lines).
func infoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), field+":"); ok {
			return v
		}
	}
	return ""
}

// dialer is the rueidis dialer for the tracking connection. rueidis pings a connection after KeepAlive of silence
// and drops it when the PING is not answered within ConnWriteTimeout, so a hung server counts as a lost one
// within about a second plus the timeout.
func dialer(timeout time.Duration) net.Dialer {
	return net.Dialer{Timeout: timeout, KeepAlive: time.Second}
}
