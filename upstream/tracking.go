package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/rueidis"
)

// ErrTrackingDown means the tracking connection is not established, so no invalidation is being received.
var ErrTrackingDown = errors.New("upstream: tracking connection is down")

// errSessionEnded is why a tracking session ends when rueidis closed its connection without saying why.
var errSessionEnded = errors.New("upstream: tracking connection closed")

const (
	// minRedial and maxRedial bound the wait before a tracking session is dialed again after one failed: it
	// doubles from minRedial with each failure in a row, up to maxRedial.
	minRedial = 50 * time.Millisecond
	maxRedial = time.Second
	// stableChecks is how many check intervals a session must stay established for its end to count as a new
	// failure rather than one more of a series: after that long, the next session is dialed at once.
	stableChecks = 2
)

// TrackerOptions configures a Tracker. The callbacks are required; they run on the tracking connection's reader
// goroutine (OnInvalidate, OnFlush) or on the tracker's own goroutine (OnFlush, OnUp, OnLost) and must be quick.
type TrackerOptions struct {
	// Addr is the upstream node whose writes are tracked.
	Addr string
	// Username and Password authenticate the tracking connection.
	Username, Password string
	// TLS, if not nil, makes the tracking connection TLS with this configuration.
	TLS *tls.Config
	// Prefixes are the key prefixes to track in BCAST mode; they must not overlap. Empty or [""] tracks every key.
	Prefixes []string
	// Timeout bounds dialing and every call on the tracking connection: a call not answered within Timeout ends
	// the session (the connection is closed and tracking counts as lost). If zero, DefaultTimeout is used.
	Timeout time.Duration
	// CheckInterval is how often the tracking connection is checked with INFO commandstats: an answer proves the
	// connection alive, and its SWAPDB count says whether another client swapped databases (Redis sends no
	// invalidation for SWAPDB). If zero, DefaultHealthInterval is used.
	CheckInterval time.Duration

	// OnInvalidate receives the keys of an invalidation push. The slices are only valid during the call and must
	// not be modified.
	OnInvalidate func(keys [][]byte)
	// OnFlush is called when every cached key may have changed: a null invalidation (FLUSHALL, FLUSHDB), or a
	// SWAPDB seen by the check.
	OnFlush func()
	// OnUp is called each time tracking is (re-)established; from then on every write under Prefixes produces an
	// invalidation. runID is the server's run_id (INFO server), which changes when the server restarts.
	OnUp func(runID string)
	// OnLost is called when an established tracking connection is lost: invalidations may have been missed.
	OnLost func(err error)
	// Logger receives connection errors; if nil, slog.Default().
	Logger *slog.Logger

	// swaps carries the SWAPDB count across the successive trackers of one node (SetPrefixes); nil: the tracker's
	// own.
	swaps *swapWatch
}

// Tracker keeps one connection to an upstream node with server-assisted invalidation in BCAST mode, through
// rueidis, and reconnects it when it drops.
//
// BCAST with prefixes derived from the policies means the server keeps no per-key table: every write under a
// tracked prefix is announced on this one connection, whichever connection read or wrote the key. featcache's reads
// and writes therefore travel on plain connections, and "is tracking intact" is one question about one connection
// per node. rueidis calls the invalidation hook with nil both for a null push and for a dead connection; the
// hook's error channel, closed before that nil call on a dead connection, tells the two apart.
//
// Each session has a rueidis client of its own, closed when the session ends, and the dedicated connection is
// closed, never released to rueidis's pool: releasing one that had an invalidation hook makes rueidis clean it
// with UNSUBSCRIBE, PUNSUBSCRIBE and SUNSUBSCRIBE, each followed by a PING, and a Redis busy with a script answers
// each of those with -BUSY, one reply more than rueidis expects per pair; its reader then panics ("protocol bug,
// message handled out of order") on a goroutine featcache cannot recover. A call that times out also ends the
// session, so that no connection with a reply in flight is used again.
type Tracker struct {
	opt    TrackerOptions
	log    *slog.Logger
	swaps  *swapWatch
	stop   chan struct{}
	exited chan struct{}

	mu    sync.Mutex
	dc    rueidis.DedicatedClient // the live tracking connection, nil while down
	runID string                  // the live session's server run_id
	fail  chan error              // ends the live session: a call on it timed out
	up    atomic.Bool

	// Readings of the SWAPDB count (readSwaps) run one at a time, so that swapWatch compares them in the order
	// the server ran them: the session's and every Barrier's. started and finished count them; reading says one
	// is in flight, readErr is the outcome of the last one.
	rmu               sync.Mutex
	rdone             *sync.Cond // on rmu: a reading finished
	reading           bool
	started, finished uint64
	readErr           error
}

// StartTracker starts tracking in the background; OnUp reports when it is established.
func StartTracker(opt TrackerOptions) *Tracker {
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	if opt.CheckInterval <= 0 {
		opt.CheckInterval = DefaultHealthInterval
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	t := &Tracker{opt: opt, log: opt.Logger, swaps: opt.swaps, stop: make(chan struct{}), exited: make(chan struct{})}
	t.rdone = sync.NewCond(&t.rmu)
	if t.swaps == nil {
		t.swaps = &swapWatch{}
	}
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

// Barrier returns once every invalidation the server sent before it has been handed to OnInvalidate, and once a
// SWAPDB the server ran before it has been seen (OnFlush): a SWAPDB in a script or function, for which Redis
// sends no invalidation, then flushes before the script's reply goes out. It takes a reading of the SWAPDB count
// on the tracking connection, as the periodic check does (CLIENT GETNAME and INFO commandstats), that begins
// after the call; the server writes pushes and replies on one connection in order. Concurrent callers share a
// reading. A caller that saw a write's reply and then passes a Barrier knows the invalidations of that write
// have been applied. Any reply proves it, an error reply included: a Redis busy with another client's script
// answers -BUSY, after the pushes it wrote before. A reading not answered within Timeout ends the session
// (tracking is lost and re-established) rather than leave the connection with a reply in flight; ctx is not
// consulted, the reading's own deadline bounds the wait.
func (t *Tracker) Barrier(ctx context.Context) error {
	t.mu.Lock()
	dc, fail, runID := t.dc, t.fail, t.runID
	t.mu.Unlock()
	if dc == nil {
		return ErrTrackingDown
	}
	if err := t.readNew(dc, runID); err != nil {
		select {
		case fail <- err:
		default:
		}
		return fmt.Errorf("upstream: tracking barrier: %w", err)
	}
	return nil
}

func (t *Tracker) run() {
	defer close(t.exited)
	backoff := time.Duration(0)
	var quiet failureLog
	for {
		if backoff > 0 {
			select {
			case <-t.stop:
				return
			case <-time.After(backoff):
			}
		}
		lasted, err := t.session()
		select {
		case <-t.stop:
			return
		default:
		}
		if lasted > 0 {
			quiet = failureLog{} // it came up: the next failure is news
		}
		if err != nil {
			if repeats, ok := quiet.due(err.Error(), time.Now()); ok {
				t.log.Warn("tracking: connection ended", "addr", t.opt.Addr, "err", err, "repeats", repeats)
			}
		}
		// A session that stayed up for a while was healthy: its loss starts a new series of attempts, the first
		// at once, instead of going on doubling the wait of failures long past.
		if lasted >= stableChecks*t.opt.CheckInterval {
			backoff = 0
		} else {
			backoff = min(max(2*backoff, minRedial), maxRedial)
		}
	}
}

// failureRepeat is how often at most the same failure of the tracking connection is logged again: a refusal that
// only an operator can lift (an ACL without INFO, a wrong password) or a Redis that stays down would otherwise log
// once a second, at every redial.
const failureRepeat = time.Minute

// failureLog decides which failures of a series of redials the log shows: each new error at once, the same one
// again once per failureRepeat, with how many times it came back meanwhile.
type failureLog struct {
	last    string
	at      time.Time
	repeats int
}

// due reports whether failure msg, at now, is to be logged, and how many times it was left out since it last was.
func (f *failureLog) due(msg string, now time.Time) (int, bool) {
	if msg == f.last && now.Sub(f.at) < failureRepeat {
		f.repeats++
		return 0, false
	}
	repeats := f.repeats
	if msg != f.last {
		repeats = 0
	}
	f.last, f.at, f.repeats = msg, now, 0
	return repeats, true
}

// session opens a rueidis client, establishes tracking on a dedicated connection of it and returns when that
// connection ends, with how long tracking was up (zero if it never was). The client is closed on return.
func (t *Tracker) session() (lasted time.Duration, err error) {
	client, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:       []string{t.opt.Addr},
		Username:          t.opt.Username,
		Password:          t.opt.Password,
		ClientName:        "featcache-tracking",
		ForceSingleClient: true,
		DisableCache:      true, // no tracking on rueidis's own shared connection; ours is explicit
		DisableRetry:      true,
		Dialer:            dialer(t.opt.Timeout),
		TLSConfig:         t.opt.TLS,
		ConnWriteTimeout:  t.opt.Timeout,
		BlockingPoolSize:  1,
	})
	if err != nil {
		return 0, fmt.Errorf("cannot reach upstream: %w", err)
	}
	defer client.Close()
	// Never released: see Tracker. Close ends the connection without sending anything on it.
	dc, _ := client.Dedicate()
	defer dc.Close()

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
		return 0, errors.New("upstream: cannot install the invalidation hook")
	}
	lost.Store(&errc)

	runID, err := t.establish(dc)
	if err != nil {
		return 0, err
	}
	fail := make(chan error, 1)
	t.mu.Lock()
	t.dc, t.fail, t.runID = dc, fail, runID
	t.mu.Unlock()
	t.up.Store(true)
	t.opt.OnUp(runID)
	t.log.Info("tracking: established", "addr", t.opt.Addr, "prefixes", len(t.opt.Prefixes))
	since := time.Now()

	tick := time.NewTicker(t.opt.CheckInterval)
	defer tick.Stop()
	for err == nil {
		select {
		case e, ok := <-errc:
			err = errSessionEnded
			if ok && e != nil {
				err = e
			}
		case err = <-fail:
		case <-tick.C:
			err = t.check(dc, runID)
		case <-t.stop:
			t.down(nil)
			return time.Since(since), nil
		}
	}
	t.down(err)
	return time.Since(since), err
}

// establish turns tracking on and reads what the session starts from: the server's run_id, and the SWAPDB count
// (a SWAPDB since the previous session of the same server flushes, as one seen by a check would).
func (t *Tracker) establish(dc rueidis.DedicatedClient) (runID string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), t.opt.Timeout)
	defer cancel()
	args := []string{"TRACKING", "ON", "BCAST"}
	for _, p := range t.opt.Prefixes {
		if p != "" {
			args = append(args, "PREFIX", p)
		}
	}
	if err := dc.Do(ctx, dc.B().Arbitrary("CLIENT").Args(args...).Build()).Error(); err != nil {
		return "", fmt.Errorf("CLIENT TRACKING ON BCAST: %w", err)
	}
	info, err := dc.Do(ctx, dc.B().Info().Section("server").Build()).ToString()
	if err != nil {
		return "", fmt.Errorf("INFO server: %w", err)
	}
	runID = infoField(info, "run_id")
	if err := t.readNew(dc, runID); err != nil {
		return "", err
	}
	return runID, nil
}

// check is the periodic health check of the tracking connection: INFO commandstats, within the timeout.
func (t *Tracker) check(dc rueidis.DedicatedClient, runID string) error {
	return t.readNew(dc, runID)
}

// readNew returns the outcome of a reading of the SWAPDB count (readSwaps, within the timeout) that began after
// the call: it takes the reading itself, or waits for the one another caller takes next. One reading at a time:
// concurrent readings could reach swapWatch in another order than the server ran them, and a reading taken as
// older than the one before looks like a CONFIG RESETSTAT, which flushes.
func (t *Tracker) readNew(dc rueidis.DedicatedClient, runID string) error {
	t.rmu.Lock()
	defer t.rmu.Unlock()
	target := t.started + 1
	for t.finished < target {
		if t.reading {
			t.rdone.Wait()
			continue
		}
		t.reading = true
		t.started++
		t.rmu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), t.opt.Timeout)
		err := t.readSwaps(ctx, dc, runID)
		cancel()
		t.rmu.Lock()
		t.reading, t.finished, t.readErr = false, t.started, err
		t.rdone.Broadcast()
	}
	return t.readErr
}

// readSwaps reads INFO commandstats and flushes when a SWAPDB may have run since the last reading. CLIENT GETNAME
// goes first in the same round trip, as the mark swapWatch counts (see there). A reply that is an
// error (BUSY while a script runs, LOADING, NOPERM) still proves the connection alive; the count is read next time.
// No reply within ctx is an error: the session ends.
func (t *Tracker) readSwaps(ctx context.Context, dc rueidis.DedicatedClient, runID string) error {
	res := dc.DoMulti(ctx, dc.B().ClientGetname().Build(), dc.B().Info().Section("commandstats").Build())
	for _, r := range res {
		if err := r.NonRedisError(); err != nil {
			return fmt.Errorf("upstream: tracking check: %w", err)
		}
	}
	info, err := res[1].ToString()
	if err != nil {
		return nil
	}
	if t.swaps.moved(runID, info, res[0].Error() == nil) {
		t.opt.OnFlush()
		t.log.Warn("tracking: SWAPDB ran on the upstream (Redis sends no invalidation for it): local tier flushed",
			"addr", t.opt.Addr)
	}
	return nil
}

// down records the end of an established session and reports it.
func (t *Tracker) down(err error) {
	t.mu.Lock()
	t.dc, t.fail = nil, nil
	t.mu.Unlock()
	t.up.Store(false)
	t.opt.OnLost(err)
}

// swapWatch tells from successive INFO commandstats readings of one server whether a SWAPDB ran in between. Redis
// counts every SWAPDB executed (cmdstat_swapdb calls, scripts and transactions included); CONFIG RESETSTAT zeroes
// the counts, after which a SWAPDB can leave the count where it was. A reset shows in three ways, any of which is
// taken as a SWAPDB:
//   - the count of the CLIENT GETNAME each reading runs just before its INFO (the mark) grows by less than one:
//     without a reset it grows by at least the one of this reading, since the previous reading's call was
//     counted. featcache answers its own clients' CLIENT GETNAME itself, and clients of Redis seldom ask, so
//     the mark's count is featcache's tracking connections': in front of one featcache instance every reset
//     shows. Several instances count each other's marks too, so a second reset within about one check interval
//     of the first can still hide, as can other clients of Redis running CLIENT GETNAME often. A server that
//     refuses it (NOPERM) leaves the two signs below;
//   - the cmdstat_config|resetstat line changes (its calls and usec; a second reset may read the same);
//   - INFO's own count goes down (other clients' INFO calls may hide that).
//
// A restart changes run_id, which the caller flushes for anyway. Safe for concurrent use.
type swapWatch struct {
	mu    sync.Mutex
	known bool
	runID string
	last  swapStats
}

// swapStats is what swapWatch compares from one reading.
type swapStats struct {
	swaps  int64  // cmdstat_swapdb calls
	resets string // the cmdstat_config|resetstat line, "" when absent
	infos  int64  // cmdstat_info calls: only grows (the checks themselves are INFO calls) unless reset
	marks  int64  // cmdstat_client|getname calls, this reading's included
	marked bool   // the reading's CLIENT GETNAME succeeded: marks counts it
}

// moved records the reading info of server runID, whose CLIENT GETNAME just before succeeded if marked, and
// reports whether a SWAPDB may have run since the previous reading of the same server.
func (w *swapWatch) moved(runID, info string, marked bool) bool {
	cur := readSwapStats(info)
	cur.marked = marked
	w.mu.Lock()
	defer w.mu.Unlock()
	prev, same := w.last, w.known && w.runID == runID
	w.known, w.runID, w.last = true, runID, cur
	reset := cur.resets != prev.resets || cur.infos < prev.infos || prev.marked && cur.marked && cur.marks <= prev.marks
	return same && (cur.swaps != prev.swaps || reset)
}

func readSwapStats(info string) swapStats {
	var s swapStats
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimRight(line, "\r")
		if v, ok := strings.CutPrefix(line, "cmdstat_swapdb:"); ok {
			s.swaps = statCalls(v)
		} else if v, ok := strings.CutPrefix(line, "cmdstat_info:"); ok {
			s.infos = statCalls(v)
		} else if v, ok := strings.CutPrefix(line, "cmdstat_client|getname:"); ok {
			s.marks = statCalls(v)
		} else if strings.HasPrefix(line, "cmdstat_config|resetstat:") {
			s.resets = line
		}
	}
	return s
}

// statCalls reads calls=N from a commandstats value ("calls=N,usec=...").
func statCalls(v string) int64 {
	v, _ = strings.CutPrefix(v, "calls=")
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
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
// within about a second plus the timeout, as it does through the check.
func dialer(timeout time.Duration) net.Dialer {
	return net.Dialer{Timeout: timeout, KeepAlive: time.Second}
}
