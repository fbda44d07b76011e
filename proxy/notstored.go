package proxy

import (
	"bytes"
	"strconv"
	"time"

	"featcache/localcache"
)

// appendNotStored adds CACHE EXPLAIN's not_stored line: the last reason the local tier did not store an answer
// about key, when it remembers one (localcache.Cache.LastNotStored: the most recent refused keys, by a hash of
// the key) and no entry filled since then holds the key (entry is the key's entry header, has whether it has one).
func (c *client) appendNotStored(b *bytes.Buffer, key []byte, entry localcache.Header, has bool, now time.Time) {
	why, at, ok := c.srv.cache.LastNotStored(key)
	if !ok || has && !at.IsZero() && at.UnixMilli() < entry.FetchedAt {
		return
	}
	b.WriteString("not_stored:")
	b.WriteString(why.String())
	if !at.IsZero() {
		b.WriteString(" ago_ms:")
		b.WriteString(strconv.FormatInt(now.Sub(at).Milliseconds(), 10))
	}
	if why == localcache.NotStoredTooLarge {
		// The bound, so that the reader knows how far local.max_memory must grow: the entry is key + 42-byte
		// header + value.
		b.WriteString(" max_entry_bytes:")
		b.WriteString(strconv.Itoa(c.srv.cache.MaxEntry()))
	}
	b.WriteString("\r\n")
}
