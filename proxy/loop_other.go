//go:build !linux

package proxy

// haveEventLoops says that this platform has no event loops (they need Linux's epoll): every client is served
// by its own goroutine.
const haveEventLoops = false

type eventLoop struct{}

func newEventLoop() (*eventLoop, error)  { return &eventLoop{}, nil }
func (l *eventLoop) close()              {}
func (l *eventLoop) run()                {}
func (l *eventLoop) attach(c *client)    {}
func (l *eventLoop) detach(c *client)    {}
func (l *eventLoop) arm(c *client) bool  { return false }
func (l *eventLoop) disarm(c *client)    {}
func (l *eventLoop) write(c *client) int { return -1 }

func (l *eventLoop) counts() (batches, handovers int64) { return 0, 0 }
