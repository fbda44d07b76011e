package main

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// wakeTimer is the open loop's dispatcher's sleep: a timerfd, which Go's network poller waits on like a socket.
// The goroutine parks (its P runs the connections meanwhile) and wakes when the kernel's timer fires, to the
// microsecond, where Go's own timers wake up to a millisecond late. Sleeping in a system call instead would keep
// the P, and with it the connection just handed a request, until the runtime takes the P back, up to
// milliseconds later.
type wakeTimer struct {
	fd   int
	file *os.File
}

func newWakeTimer() (*wakeTimer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd_create: %w", err)
	}
	return &wakeTimer{fd: fd, file: os.NewFile(uintptr(fd), "timerfd")}, nil
}

// sleep returns after d (or a little later).
func (t *wakeTimer) sleep(d time.Duration) error {
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	if err := unix.TimerfdSettime(t.fd, 0, &spec, nil); err != nil {
		return fmt.Errorf("timerfd_settime: %w", err)
	}
	var expirations [8]byte
	if _, err := t.file.Read(expirations[:]); err != nil {
		return fmt.Errorf("timerfd read: %w", err)
	}
	return nil
}

func (t *wakeTimer) close() { t.file.Close() }

// exactTimerSlack makes the calling thread's sleeps end as close to their deadline as the kernel can (its timer
// slack is 50 µs by default).
func exactTimerSlack() { unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0) }

// threadSleep sleeps the calling thread in nanosleep, keeping its P: for a goroutine locked to its thread that
// must wake at a precise instant.
func threadSleep(d time.Duration) {
	ts := unix.NsecToTimespec(int64(d))
	unix.Nanosleep(&ts, nil)
}
