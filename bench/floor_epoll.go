//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"github.com/coocood/freecache"
)

// The epoll floor is the floor on an event loop, as Redis serves: one OS thread running a level-triggered
// epoll loop over non-blocking sockets with the standard syscall package, no net package and no poller
// goroutines. Reads, writes and an epoll_wait that does not wait are raw system calls, which the runtime does
// not hear of; only an epoll_wait that blocks goes through syscall.EpollWait, so the runtime can hand the
// thread's P on meanwhile (with syscall.Read, Write and EpollWait throughout, CPU per request was 7-18% higher).
// Each readable connection gets one read into its buffer (floorBuffer, the same parser and the same GET, SET and
// PING as the floor), and the replies to every command of that read are written at once, directly; what a full
// socket does not take waits for EPOLLOUT, and the connection is not read meanwhile. It runs as
// "bench floor -epoll -listen ADDR" and is measured as the target "floor-epoll" (-floor-epoll).
//
// It asks whether the system calls of Go's net package are what the unpipelined hit path loses to Redis on:
// a goroutine per connection pays a read, a write, and a read that returns EAGAIN before it parks on the poller,
// where an event loop pays a read and a write per request and one epoll_wait for every connection that is ready.

// haveEpollFloor says that this platform has the epoll floor.
const haveEpollFloor = true

// floorEpollEvents is how many ready connections one epoll_wait returns at most.
const floorEpollEvents = 256

// floorEpoll is one listening socket and its event loop.
type floorEpoll struct {
	lfd   int    // listening socket, non-blocking
	epfd  int    // epoll instance
	stop  [2]int // a pipe: a byte written to stop[1] ends the loop
	cache *freecache.Cache
	conns []*floorEpollConn // by file descriptor
}

// floorEpollConn is one client connection of the loop.
type floorEpollConn struct {
	fd      int
	in      *floorBuffer
	out     []byte // replies of the last read; out[sent:] not yet written
	sent    int
	pending bool // a write did not take all of out: waiting for EPOLLOUT, not reading
}

// listenFloorEpoll opens a non-blocking listening socket on addr (an IPv4 host:port; port 0 picks one) and an
// epoll instance watching it.
func listenFloorEpoll(addr string, cache *freecache.Cache) (*floorEpoll, error) {
	ta, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return nil, err
	}
	sa := &syscall.SockaddrInet4{Port: ta.Port}
	if ip := ta.IP.To4(); ip != nil {
		copy(sa.Addr[:], ip)
	}
	lfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("floor-epoll: socket: %w", err)
	}
	fe := &floorEpoll{lfd: lfd, epfd: -1, stop: [2]int{-1, -1}, cache: cache}
	if err := fe.setUp(sa); err != nil {
		fe.close()
		return nil, err
	}
	return fe, nil
}

func (fe *floorEpoll) setUp(sa *syscall.SockaddrInet4) error {
	if err := syscall.SetsockoptInt(fe.lfd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return fmt.Errorf("floor-epoll: SO_REUSEADDR: %w", err)
	}
	if err := syscall.Bind(fe.lfd, sa); err != nil {
		return fmt.Errorf("floor-epoll: bind: %w", err)
	}
	if err := syscall.Listen(fe.lfd, 511); err != nil { // Redis's tcp-backlog
		return fmt.Errorf("floor-epoll: listen: %w", err)
	}
	var err error
	if fe.epfd, err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC); err != nil {
		return fmt.Errorf("floor-epoll: epoll_create1: %w", err)
	}
	if err := syscall.Pipe2(fe.stop[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		return fmt.Errorf("floor-epoll: pipe: %w", err)
	}
	for _, fd := range []int{fe.lfd, fe.stop[0]} {
		if err := fe.watch(syscall.EPOLL_CTL_ADD, fd, syscall.EPOLLIN); err != nil {
			return err
		}
	}
	return nil
}

// addr returns the address the socket listens on.
func (fe *floorEpoll) addr() string {
	sa, err := syscall.Getsockname(fe.lfd)
	if err != nil {
		return "?"
	}
	a := sa.(*syscall.SockaddrInet4)
	return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
}

// shutdown makes serve return; safe from another goroutine.
func (fe *floorEpoll) shutdown() { syscall.Write(fe.stop[1], []byte{0}) }

func (fe *floorEpoll) watch(op, fd int, events uint32) error {
	if err := syscall.EpollCtl(fe.epfd, op, fd, &syscall.EpollEvent{Events: events, Fd: int32(fd)}); err != nil {
		return fmt.Errorf("floor-epoll: epoll_ctl: %w", err)
	}
	return nil
}

// serve runs the event loop on the calling goroutine, locked to its OS thread, until shutdown; then it closes
// every socket.
func (fe *floorEpoll) serve() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer fe.close()
	events := make([]syscall.EpollEvent, floorEpollEvents)
	for {
		n, err := epollWait(fe.epfd, events)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return fmt.Errorf("floor-epoll: epoll_wait: %w", err)
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			switch {
			case fd == fe.stop[0]:
				return nil
			case fd == fe.lfd:
				if err := fe.accept(); err != nil {
					return err
				}
			case fd < len(fe.conns) && fe.conns[fd] != nil:
				fe.ready(fe.conns[fd], ev.Events)
			}
		}
	}
}

// accept takes every connection waiting on the listening socket.
func (fe *floorEpoll) accept() error {
	for {
		fd, _, err := syscall.Accept4(fe.lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		switch {
		case errors.Is(err, syscall.EAGAIN):
			return nil
		case errors.Is(err, syscall.EINTR), errors.Is(err, syscall.ECONNABORTED):
			continue
		case err != nil:
			return fmt.Errorf("floor-epoll: accept: %w", err)
		}
		// As Go's net package and Redis do: replies leave at once, not when Nagle lets them.
		syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		if err := fe.watch(syscall.EPOLL_CTL_ADD, fd, syscall.EPOLLIN); err != nil {
			syscall.Close(fd)
			continue
		}
		for fd >= len(fe.conns) {
			fe.conns = append(fe.conns, make([]*floorEpollConn, len(fe.conns)+64)...)
		}
		fe.conns[fd] = &floorEpollConn{fd: fd, in: newFloorBuffer(), out: make([]byte, 0, 16<<10)}
	}
}

// ready handles one connection's events: the rest of its replies when it was waiting to write, else one read,
// the replies to every command the read completes, and one write of them.
func (fe *floorEpoll) ready(c *floorEpollConn, events uint32) {
	if c.pending {
		if events&(syscall.EPOLLOUT|syscall.EPOLLERR|syscall.EPOLLHUP) != 0 {
			fe.flush(c)
		}
		return
	}
	n, err := rawRead(c.fd, c.in.room())
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
		return // level-triggered: epoll reports it again while it is readable
	}
	if n <= 0 || err != nil {
		fe.drop(c)
		return
	}
	if c.out, err = c.in.serve(n, c.out, fe.cache); err != nil {
		fe.drop(c)
		return
	}
	if len(c.out) > 0 {
		fe.flush(c)
	}
}

// flush writes c.out[c.sent:]; what the socket does not take stays, and the connection waits for EPOLLOUT instead of
// reading, so a client that does not read its replies cannot make the loop buffer without bound.
func (fe *floorEpoll) flush(c *floorEpollConn) {
	for c.sent < len(c.out) {
		n, err := rawWrite(c.fd, c.out[c.sent:])
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EAGAIN):
			if !c.pending {
				c.pending = true
				if fe.watch(syscall.EPOLL_CTL_MOD, c.fd, syscall.EPOLLOUT) != nil {
					fe.drop(c)
				}
			}
			return
		case err != nil || n <= 0:
			fe.drop(c)
			return
		}
		c.sent += n
	}
	c.out, c.sent = c.out[:0], 0
	if c.pending {
		c.pending = false
		if fe.watch(syscall.EPOLL_CTL_MOD, c.fd, syscall.EPOLLIN) != nil {
			fe.drop(c)
		}
	}
}

// drop closes a connection; closing its descriptor takes it out of the epoll set.
func (fe *floorEpoll) drop(c *floorEpollConn) {
	syscall.Close(c.fd)
	fe.conns[c.fd] = nil
}

func (fe *floorEpoll) close() {
	for _, c := range fe.conns {
		if c != nil {
			fe.drop(c)
		}
	}
	for _, fd := range []int{fe.lfd, fe.epfd, fe.stop[0], fe.stop[1]} {
		if fd >= 0 {
			syscall.Close(fd)
		}
	}
}

// epollWait returns the ready events, first without blocking and without telling the runtime (a raw system
// call), and only when none is ready through syscall.EpollWait, which blocks and lets the runtime know.
func epollWait(epfd int, events []syscall.EpollEvent) (int, error) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_WAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	if r > 0 {
		return int(r), nil
	}
	return syscall.EpollWait(epfd, events, -1)
}

// rawRead and rawWrite are read and write on a non-blocking socket as raw system calls: they never block, so the
// runtime need not be told (syscall.Read and Write enter and leave a system call state around each).
func rawRead(fd int, b []byte) (int, error) {
	r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func rawWrite(fd int, b []byte) (int, error) {
	r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}
