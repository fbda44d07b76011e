//go:build !linux

package main

import "time"

// wakeTimer is the open loop's dispatcher's sleep. Without Linux's timerfd it is Go's own timer, which can wake up
// to a millisecond late: the open-loop figures then count that lateness as the targets'.
type wakeTimer struct{}

func newWakeTimer() (*wakeTimer, error) { return &wakeTimer{}, nil }

func (t *wakeTimer) sleep(d time.Duration) error {
	time.Sleep(d)
	return nil
}

func (t *wakeTimer) close() {}

func exactTimerSlack() {}

func threadSleep(d time.Duration) { time.Sleep(d) }
