package localcache_test

import (
	"fmt"
	"strconv"
	"time"

	"featcache/localcache"
)

// Example shows the cached-read path of one GET as the proxy runs it: look up; on a miss, fill through
// Acquire and Complete, so concurrent misses of the key share one upstream read.
func Example() {
	now := time.UnixMilli(1_700_000_000_000)
	c, err := localcache.New(localcache.Options{MaxMemory: 8 << 20, Now: func() time.Time { return now }})
	if err != nil {
		panic(err)
	}
	p := &localcache.Policy{SoftTTL: time.Minute, HardTTL: time.Hour, NegativeTTL: 30 * time.Second}
	upstreamReads := 0
	fetch := func(key []byte) localcache.Result {
		upstreamReads++
		return localcache.Result{Value: []byte("0.42"), PTTL: localcache.NoExpiry}
	}

	get := func(key []byte) []byte {
		if reply, lk := c.AppendGet(nil, key, p, now, false); lk.State != localcache.StateMiss {
			return reply // a soft-stale hit would also start a background refresh through Acquire
		}
		f, leader := c.Acquire(key)
		if leader {
			// Look again inside the single-flight: a fill of this generation may have stored the key
			// between the miss above and Acquire, and one generation must cost one upstream read.
			if reply, lk := c.AppendGet(nil, key, p, now, false); lk.State != localcache.StateMiss {
				c.Complete(f, localcache.Result{NoStore: true, Reply: reply}, p)
				return reply
			}
			c.Complete(f, fetch(key), p)
		}
		res := f.Result() // waits for the leader
		switch {
		case res.Err != nil:
			return []byte("-ERR " + res.Err.Error() + "\r\n")
		case res.NoStore:
			return res.Reply
		case res.Nil:
			return []byte("$-1\r\n")
		}
		return []byte("$" + strconv.Itoa(len(res.Value)) + "\r\n" + string(res.Value) + "\r\n")
	}

	fmt.Printf("%q\n", get([]byte("user:1:ctr")))
	fmt.Printf("%q\n", get([]byte("user:1:ctr")))
	c.Invalidate([]byte("user:1:ctr")) // a write went through
	fmt.Printf("%q\n", get([]byte("user:1:ctr")))
	s := c.Stats()
	fmt.Println("upstream reads:", upstreamReads, "fills stored:", s.FillsStored)
	// Output:
	// "$4\r\n0.42\r\n"
	// "$4\r\n0.42\r\n"
	// "$4\r\n0.42\r\n"
	// upstream reads: 2 fills stored: 2
}
