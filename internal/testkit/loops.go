package testkit

import (
	"sync"
	"sync/atomic"
)

// Loops runs bodies in loops, each on a goroutine of its own, until Stop: the background load of a test (writers,
// readers, a moving clock) while the test checks something else. The zero value is ready. Go, Stopped and Stop may
// be called from any goroutine, but no Go after Stop.
type Loops struct {
	stopped atomic.Bool
	wg      sync.WaitGroup
}

// Go calls body(0), body(1), ... on a new goroutine until Stop is called or body returns false.
func (l *Loops) Go(body func(i int) bool) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for i := 0; !l.stopped.Load(); i++ {
			if !body(i) {
				return
			}
		}
	}()
}

// Stopped reports whether Stop has been called, for a body that waits on its own.
func (l *Loops) Stopped() bool { return l.stopped.Load() }

// Stop ends every loop after its current call of body and waits until all have returned.
func (l *Loops) Stop() {
	l.stopped.Store(true)
	l.wg.Wait()
}
