package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"featcache/internal/resp"
)

// fuzzServeConfig keeps the limits small, so that short inputs reach them, and denies, beyond the default list,
// what would stop the shared Redis for every later input (a looping script, CLIENT PAUSE, MIGRATE to a host that
// does not answer).
const fuzzServeConfig = `
limits: {max_request_bytes: 64KB, max_output_bytes: 256KB, max_clients_memory: 1MB, output_timeout: 1s}
commands:
  deny: [acl, bgrewriteaof, bgsave, config, debug, failover, module, monitor, psync, replconf, replicaof, save,
         shutdown, slaveof, sync, eval, evalsha, eval_ro, evalsha_ro, fcall, fcall_ro, function, script,
         "client|pause", migrate]
policies:
  - {name: stale, prefix: "s:", hard_ttl: 1h, on_upstream_error: serve_stale, max_stale: 1h, negative_ttl: 1s}
  - {name: default, prefix: "", hard_ttl: 1m}
`

// FuzzServe sends arbitrary bytes on a client connection of a real featcache, in front of a real Redis, then closes
// its side. Whatever the bytes, featcache answers with whole RESP frames only and ends the connection, no
// connection panics, and a new client is served at once afterwards: the connection guard and the request path
// hold as a whole, not only the parser.
func FuzzServe(f *testing.F) {
	for _, s := range []string{
		"PING\r\n",
		"*2\r\n$3\r\nGET\r\n$3\r\ns:1\r\n",
		"SET s:1 v\r\nGET s:1\r\nMGET s:1 s:2 k\r\n",
		"MULTI\r\nSET a 1\r\nGET a\r\nEXEC\r\n",
		"WATCH a\r\nGET a\r\nMULTI\r\nINCR a\r\nEXEC\r\n",
		"SUBSCRIBE ch\r\nPING\r\nUNSUBSCRIBE\r\nGET s:1\r\n",
		"CLIENT REPLY OFF\r\nGET s:1\r\nCLIENT REPLY ON\r\nPING\r\n",
		"BLPOP q 0\r\n",
		"HELLO 3\r\nHELLO 2 AUTH default x\r\nAUTH a b c\r\n",
		"HELLO 3\r\nGET s:1\r\nHSET s:h f v\r\nHGETALL s:h\r\nSUBSCRIBE ch\r\nGET s:1\r\nPUBLISH ch x\r\nHELLO 2\r\nPING\r\n",
		"HELLO 3\r\nMULTI\r\nGET s:1\r\nEXEC\r\nWATCH a\r\nHELLO 2\r\nGET a\r\nHELLO 3\r\nRESET\r\nGET a\r\n",
		"CACHE STATS\r\nCACHE EXPLAIN s:1\r\nCACHE FLUSH\r\n",
		"*2147483647\r\n",
		"*1\r\n$2000000000\r\n",
		"SET k \"unbalanced\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$70000\r\n",
		"MGET " + strings.Repeat("s:1 ", 200) + "\r\n",
		"CONFIG GET *\r\nSUBSCRIBE a\r\nCONFIG GET *\r\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
	} {
		f.Add([]byte(s))
	}
	p := startProxy(f, fuzzServeConfig)
	expectFresh := func(t *testing.T) {
		c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
		if err != nil {
			t.Fatalf("a new client cannot connect: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("PING\r\n"))
		b := make([]byte, 7)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "+PONG\r\n" {
			t.Fatalf("a new client: got %q, %v; want +PONG", b, err)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		nc, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			nc.Write(data) // fails once featcache has closed the connection: that is allowed
			nc.(*net.TCPConn).CloseWrite()
		}()
		out, err := io.ReadAll(io.LimitReader(nc, 16<<20))
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			t.Fatalf("the connection was still open 10s after the input ended; got %.200q", out)
		case isConnReset(err):
			// featcache closed the connection with input unread, as Redis does: the kernel answered the rest of
			// the input with a reset, which may discard replies not read yet. Nothing more to check.
		case err != nil:
			t.Fatalf("read: %v", err)
		default:
			// What featcache sent is whole RESP frames.
			r := bufio.NewReader(bytes.NewReader(out))
			for {
				if _, err := r.Peek(1); err != nil {
					break
				}
				if _, err := resp.ReadFrame(r, nil); err != nil {
					t.Fatalf("reply is not whole RESP frames (%v): %.300q", err, out)
				}
			}
		}
		if n := p.srv.Stats().Panics.Load(); n != 0 {
			t.Fatalf("%d connection panics", n)
		}
		expectFresh(t)
	})
}
