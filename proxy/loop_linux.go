//go:build linux

package proxy

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// loopEvents is how many ready sockets one epoll_wait returns at most.
const loopEvents = 256

// eventLoop is one epoll set of parked clients' sockets and the goroutine that serves them (loop.go).
//
// The set's descriptor is itself registered with Go's poller, so the loop's goroutine waits for it as any
// goroutine waits for a socket: it never holds a thread or a P while nothing is ready, and the runtime keeps
// scheduling the other goroutines (upstream readers, fills, the clients' own goroutines) between the loop's rounds.
// The clients' sockets are in the set level-triggered: a socket the loop leaves unread stays ready.
type eventLoop struct {
	epfd   int
	file   *os.File // epfd, registered with Go's poller
	raw    syscall.RawConn
	events []syscall.EpollEvent
	waitFn func(fd uintptr) bool

	// The client being served, the descriptor and the outcome: so that the function given to RawConn.Read is
	// made once (serveNow).
	cur     *client
	fd      uintptr
	outcome int
	h       loopHandoff
	serveFn func(fd uintptr) bool

	// Batches answered whole and handed over: the loop's own, so that counting them shares no cache line with
	// other goroutines.
	batches, handovers atomic.Int64

	mu     sync.Mutex
	closed bool      // close began: arm adds nothing more
	slots  []*client // by loopClient.slot
	free   []int32
}

// haveEventLoops says that this platform has event loops.
const haveEventLoops = true

// newEventLoop makes an epoll set for a loop.
func newEventLoop() (*eventLoop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	l := &eventLoop{epfd: epfd, file: os.NewFile(uintptr(epfd), "epoll"), events: make([]syscall.EpollEvent, loopEvents)}
	if l.raw, err = l.file.SyscallConn(); err != nil {
		l.file.Close()
		return nil, err
	}
	l.waitFn, l.serveFn = l.poll, l.serveNow
	return l, nil
}

// counts returns the loop's batches answered whole, and handed over.
func (l *eventLoop) counts() (batches, handovers int64) { return l.batches.Load(), l.handovers.Load() }

// close ends the loop's goroutine.
func (l *eventLoop) close() {
	l.mu.Lock()
	l.closed = true // no socket is armed from now on (arm)
	l.mu.Unlock()
	l.file.Close()
}

// run serves the set's ready clients until close. The loop runs inside one RawConn.Read of the set's descriptor
// (poll), which keeps the poller's readiness from one wait to the next: a socket that became ready while the loop
// served others has woken the set's descriptor meanwhile, and the next wait returns at once.
func (l *eventLoop) run() { l.raw.Read(l.waitFn) }

// poll serves rounds: a round takes what is ready without waiting (a raw epoll_wait) and serves it; then the loop
// waits through Go's poller, as a goroutine per connection would, so that other goroutines run and the runtime
// polls the network (upstream replies) between rounds; unless the round took as many sockets as one epoll_wait
// returns, when more may be ready already.
func (l *eventLoop) poll(uintptr) bool {
	for {
		// epoll_pwait without a signal mask is epoll_wait, which some architectures (arm64) do not have.
		r, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&l.events[0])),
			uintptr(len(l.events)), 0, 0, 0)
		if e != 0 || r == 0 {
			return false
		}
		n := int(r)
		for _, ev := range l.events[:n] {
			if c := l.client(ev.Fd); c != nil && c.lp.gen.Load() == ev.Pad && c.lp.state.CompareAndSwap(loopParked, loopServing) {
				l.serve(c)
			}
		}
		if n < len(l.events) {
			return false
		}
	}
}

// client returns the client of a slot, nil when it left.
func (l *eventLoop) client(slot int32) *client {
	l.mu.Lock()
	defer l.mu.Unlock()
	if int(slot) < len(l.slots) {
		return l.slots[slot]
	}
	return nil
}

// attach gives c a slot in the loop, and its c.lp (set under the lock: the loop reads it once it finds c there).
func (l *eventLoop) attach(c *client) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var slot int32
	if n := len(l.free); n > 0 {
		slot, l.free = l.free[n-1], l.free[:n-1]
		l.slots[slot] = c
	} else {
		slot = int32(len(l.slots))
		l.slots = append(l.slots, c)
	}
	c.lp = &loopClient{loop: l, slot: slot, wake: make(chan struct{}, 1)}
	l.controls(c.lp)
}

// detach frees c's slot once its connection is closed (a late event for it finds nothing, or a client parked
// since, which finds nothing to read).
func (l *eventLoop) detach(c *client) {
	if c.lp.timer != nil {
		c.lp.timer.Stop()
	}
	l.mu.Lock()
	l.slots[c.lp.slot] = nil
	l.free = append(l.free, c.lp.slot)
	l.mu.Unlock()
}

// arm adds c's socket to the set; false when the socket or the loop is closed. It holds l.mu, which close takes
// before it closes the set's descriptor: that number, once closed, may be another set's.
func (l *eventLoop) arm(c *client) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	c.lp.armed = false
	err := c.dir.raw.Control(c.lp.armFn)
	return err == nil && c.lp.armed
}

// disarm takes c's socket out of the set. Control holds the descriptor: it cannot be closed, and its number
// reused, meanwhile.
func (l *eventLoop) disarm(c *client) { c.dir.raw.Control(c.lp.disarmFn) }

// controls makes lp's functions for arm and disarm.
func (l *eventLoop) controls(lp *loopClient) {
	lp.armFn = func(fd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: lp.slot, Pad: lp.gen.Load()}
		err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
		if err == syscall.EEXIST {
			err = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
		}
		lp.armed = err == nil
	}
	lp.disarmFn = func(fd uintptr) { syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil) }
}

// Outcomes of serving a client (eventLoop.serveNow).
const (
	loopWaits   = iota // the client waits for its next batch: parked again
	loopHandsOn        // its goroutine takes it on (eventLoop.h)
)

// serve runs c's ready batches while the loop may (c.lp.state is loopServing), and then parks c again or hands
// it over to its goroutine. The reads, the batches and the writes run inside one RawConn.Read of the socket,
// which holds the descriptor: it cannot be closed, and its number reused, meanwhile.
func (l *eventLoop) serve(c *client) {
	lp := c.lp
	l.cur, l.h, l.outcome = c, loopHandoff{}, loopWaits
	if err := c.dir.raw.Read(l.serveFn); err != nil {
		c.rd.DirectError(err) // closed: the goroutine's read returns the error
		l.outcome = loopHandsOn
	}
	l.cur = nil
	if l.outcome == loopHandsOn {
		l.handOver(c, l.h)
		return
	}
	c.markWait(true)
	lp.state.Store(loopParked)
	// Kicked between serveNow's look and the store, the goroutine may have seen loopServing: look again.
	if c.kicked() && lp.state.CompareAndSwap(loopParked, loopServing) {
		l.handOver(c, loopHandoff{})
	}
}

// serveNow is serve's function for RawConn.Read, on the socket's descriptor fd. It reads batches until the
// socket is drained (resp.Reader.ReadDirect: TCP_INQ tells, a FIN counting as a byte left), so that every socket
// left in the set has nothing the loop has not read, and whatever arrives later wakes the set again. A client
// that keeps its pipeline full is handed over after a few batches, to be served by its goroutine rather than
// ahead of the others.
func (l *eventLoop) serveNow(fd uintptr) bool {
	c := l.cur
	l.fd = fd
	c.rd.BeginDirect() // the socket was reported ready: ReadDirect reads
	for rounds := 0; ; rounds++ {
		if c.kicked() || rounds == 8 {
			l.outcome = loopHandsOn
			return true
		}
		cmds, wait, err := c.rd.ReadDirect(c.cmds[:0], fd)
		c.cmds = cmds
		if wait {
			return true
		}
		c.markWait(false)
		c.dir.batches++ // the goroutine, when it serves the client itself (skip), reads directly after directAfter
		// A read error goes to the goroutine with the batch before it; so does a batch while a policy has a
		// snapshot pointer, whose version read waits upstream.
		if err != nil || c.srv.policies.Load().hasSnapshots {
			l.h, l.outcome = loopHandoff{cmds: cmds, err: err}, loopHandsOn
			return true
		}
		if h, ok := c.runInLoop(cmds); !ok {
			l.h, l.outcome = h, loopHandsOn
			return true
		}
		l.batches.Add(1)
	}
}

// write writes the replies of the client being served (c.out) without waiting; it returns how many bytes the
// socket took (-1 on an error).
func (l *eventLoop) write(c *client) int {
	b := c.out
	r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, l.fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	switch e {
	case 0:
		raceWrote(l.fd)
		return int(r)
	case syscall.EAGAIN, syscall.EINTR:
		return 0
	}
	return -1
}

// handOver gives c's connection back to its goroutine, with h.
func (l *eventLoop) handOver(c *client, h loopHandoff) {
	lp := c.lp
	l.disarm(c)
	l.handovers.Add(1)
	lp.h = h
	lp.handedOver()
	lp.state.Store(loopGoroutine)
	lp.signal()
}
