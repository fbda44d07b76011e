package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/coocood/freecache"

	"featcache/internal/resp"
)

// The floor is the least a Go server can do to answer a cached GET: one goroutine per connection that reads
// whatever the client sent, parses every complete command in the read, answers GET from freecache with GetFn
// straight into the reply buffer, and writes the replies of the whole read at once. It has no policy, no
// freshness, no upstream and no bookkeeping: what featcache spends above it on the hit path is the price of
// those. It runs as its own process ("bench floor -listen ADDR"), pinned with the servers, is seeded through its
// own address (SET stores in memory) and takes part in the profiles whose keys all fit in it (-floor).
//
// It knows GET, SET and PING; anything else is answered with an error, which redis-benchmark's start-up CONFIG
// GET tolerates.

// floorMaxArgs bounds a command's argument count; floorMaxBulk a bulk's length (the read buffer grows to hold it).
const (
	floorMaxArgs = 16
	floorMaxBulk = 4 << 20
)

var errFloorProtocol = errors.New("floor: protocol error")

// runFloor is the "floor" subcommand: bench floor [-epoll] -listen ADDR [-max-memory SIZE].
func runFloor(args []string) error {
	fs := flag.NewFlagSet("floor", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to accept clients on")
	maxMemory := mustSize("64MB")
	fs.Var(&maxMemory, "max-memory", "size of the freecache the values are kept in")
	epoll := fs.Bool("epoll", false, "serve from one thread's epoll loop (bench/floor_epoll.go), not a goroutine per connection")
	fs.Parse(args)
	cache := freecache.NewCache(int(maxMemory.bytes))
	if *epoll {
		fe, err := listenFloorEpoll(*listen, cache)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "floor-epoll %s, freecache of %s\n", fe.addr(), maxMemory)
		return fe.serve()
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "floor %s, freecache of %s\n", ln.Addr(), maxMemory)
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go floorConn(c, cache)
	}
}

// floorConn serves one connection until it closes or sends something the floor cannot parse. It serves inside one
// RawConn.Read of the socket, as featcache does (proxy/client.go, readDirect): after a read that left nothing in the
// socket (TCP_INQ, resp.Inq), the goroutine waits for it at once instead of making the read that would find
// nothing, which a loop around net.Conn.Read makes before every wait.
func floorConn(c net.Conn, cache *freecache.Cache) {
	defer c.Close()
	fb := newFloorBuffer()
	out := make([]byte, 0, 16<<10)
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil || !resp.EnableInq(raw) {
		floorConnReads(c, fb, out, cache) // no TCP_INQ (not Linux): a read loop
		return
	}
	var inq resp.Inq
	drained := false
	raw.Read(func(fd uintptr) bool {
		for {
			if drained {
				drained = false
				return false // wait for the socket
			}
			n, left, err := inq.Recv(int(fd), fb.room())
			switch {
			case err == syscall.EAGAIN:
				return false
			case n <= 0 || err != nil:
				return true
			}
			drained = left == 0
			if out, err = fb.serve(n, out, cache); err != nil || !floorWrite(c, &out) {
				return true
			}
		}
	})
}

// floorConnReads is floorConn around net.Conn.Read, where a read cannot tell that it left the socket empty.
func floorConnReads(c net.Conn, fb *floorBuffer, out []byte, cache *freecache.Cache) {
	for {
		n, err := c.Read(fb.room())
		if n == 0 || err != nil {
			return
		}
		if out, err = fb.serve(n, out, cache); err != nil || !floorWrite(c, &out) {
			return
		}
	}
}

// floorWrite writes the replies in *out, if any, and empties it; false when the write failed.
func floorWrite(c net.Conn, out *[]byte) bool {
	if len(*out) == 0 {
		return true
	}
	_, err := c.Write(*out)
	*out = (*out)[:0]
	return err == nil
}

// floorBuffer is one connection's read buffer, shared by the goroutine floor and the epoll floor: in[start:end]
// is what was read and not yet parsed, the start of a command whose end has not arrived.
type floorBuffer struct {
	in         []byte
	start, end int
	args       [floorMaxArgs][]byte
}

func newFloorBuffer() *floorBuffer { return &floorBuffer{in: make([]byte, 16<<10)} }

// room returns where the next read goes: after what is buffered, once a partial command has been moved to the
// front, or the buffer doubled for a command larger than it.
func (fb *floorBuffer) room() []byte {
	if fb.end == len(fb.in) {
		if fb.start > 0 {
			fb.end = copy(fb.in, fb.in[fb.start:fb.end])
			fb.start = 0
		} else {
			fb.in = append(fb.in, make([]byte, len(fb.in))...)
		}
	}
	return fb.in[fb.end:]
}

// serve takes the n bytes just read into room and appends the replies of every command they complete to out.
// An error means the client sent something the floor cannot parse: the connection is to be closed.
func (fb *floorBuffer) serve(n int, out []byte, cache *freecache.Cache) ([]byte, error) {
	fb.end += n
	for fb.start < fb.end {
		argv, used, err := floorParse(fb.in[fb.start:fb.end], fb.args[:0])
		if err != nil {
			return out, err
		}
		if used == 0 {
			break // incomplete: read more
		}
		fb.start += used
		out = floorServe(out, argv, cache)
	}
	if fb.start == fb.end {
		fb.start, fb.end = 0, 0
	}
	return out, nil
}

// floorServe appends the reply to one command.
func floorServe(out []byte, argv [][]byte, cache *freecache.Cache) []byte {
	switch {
	case len(argv) == 2 && bytes.EqualFold(argv[0], []byte("GET")):
		err := cache.GetFn(argv[1], func(v []byte) error {
			out = append(strconv.AppendInt(append(out, '$'), int64(len(v)), 10), '\r', '\n')
			out = append(append(out, v...), '\r', '\n')
			return nil
		})
		if err != nil {
			out = append(out, "$-1\r\n"...)
		}
	case len(argv) == 3 && bytes.EqualFold(argv[0], []byte("SET")):
		if err := cache.Set(argv[1], argv[2], 0); err != nil {
			out = append(out, "-ERR "...)
			out = append(append(out, err.Error()...), '\r', '\n')
		} else {
			out = append(out, "+OK\r\n"...)
		}
	case len(argv) == 1 && bytes.EqualFold(argv[0], []byte("PING")):
		out = append(out, "+PONG\r\n"...)
	default:
		out = append(out, "-ERR the floor answers GET, SET and PING only\r\n"...)
	}
	return out
}

// floorParse parses one RESP array of bulk strings at the start of b into argv (slices of b). It returns used == 0
// when b holds only part of the command.
func floorParse(b []byte, argv [][]byte) (_ [][]byte, used int, err error) {
	if b[0] != '*' {
		return nil, 0, errFloorProtocol
	}
	n, i, err := floorInt(b, 1)
	if err != nil || i == 0 {
		return nil, 0, err
	}
	if n < 1 || n > floorMaxArgs {
		return nil, 0, errFloorProtocol
	}
	for range n {
		if i >= len(b) {
			return nil, 0, nil
		}
		if b[i] != '$' {
			return nil, 0, errFloorProtocol
		}
		l, j, err := floorInt(b, i+1)
		if err != nil || j == 0 {
			return nil, 0, err
		}
		if l < 0 || l > floorMaxBulk {
			return nil, 0, errFloorProtocol
		}
		if j+l+2 > len(b) {
			return nil, 0, nil
		}
		argv = append(argv, b[j:j+l])
		i = j + l + 2
	}
	return argv, i, nil
}

// floorInt reads the decimal number at b[i:] up to its CRLF and returns it with the index after the CRLF, or
// next == 0 when the CRLF has not arrived yet.
func floorInt(b []byte, i int) (v, next int, err error) {
	for ; i < len(b); i++ {
		c := b[i]
		switch {
		case c >= '0' && c <= '9':
			v = v*10 + int(c-'0')
			if v > floorMaxBulk {
				return 0, 0, errFloorProtocol
			}
		case c == '\r':
			if i+1 >= len(b) {
				return 0, 0, nil
			}
			if b[i+1] != '\n' {
				return 0, 0, errFloorProtocol
			}
			return v, i + 2, nil
		case c == '-' && v == 0:
			return 0, 0, errFloorProtocol // nil arrays and bulks are not requests
		default:
			return 0, 0, errFloorProtocol
		}
	}
	return 0, 0, nil
}

// startFloor runs this program's floor mode as a separate process pinned with the servers, with room for
// maxMemory of values; with epoll, the epoll floor.
func (f *fleet) startFloor(maxMemory int64, epoll bool) (string, *proc, error) {
	args := []string{"-max-memory", strconv.FormatInt(maxMemory, 10)}
	if epoll {
		return f.startSelf("floor", append(args, "-epoll")...)
	}
	return f.startSelf("floor", args...)
}

// startFloorTarget starts the floor (with epoll, the epoll floor, "floor-epoll") with room for every key of the
// workload and of redis-benchmark, seeds it, and adds it to targets.
func startFloorTarget(f *fleet, s settings, epoll bool, targets *[]*liveTarget, logf func(string, ...any)) error {
	w := &s.Workload
	name := "floor"
	if epoll {
		name = "floor-epoll"
	}
	// Values of up to 2 KiB (16 KiB for embeddings) with freecache's per-entry header and its 1/256 segments'
	// slack: four times the values' size, and no less than 64 MiB.
	size := max(int64(w.Keys)*4*2048+int64(s.RBKeys)*4*1024, 64<<20)
	if w.EmbShare > 0 {
		size += int64(float64(w.Keys)*w.EmbShare) * 4 * (16 << 10)
	}
	addr, p, err := f.startFloor(size, epoll)
	if err != nil {
		return err
	}
	logf("seeding %d keys into the %s", w.Keys, name)
	if _, _, err := seedRedis(addr, w); err != nil {
		return err
	}
	if s.RedisBenchmark {
		if _, _, err := seedKeys(addr, s.RBKeys, benchmarkKey, func(int) []byte { return valuePool[:1024] }); err != nil {
			return err
		}
	}
	*targets = append(*targets, &liveTarget{name: name, kind: kindFloor, addr: addr, proc: p})
	return nil
}

// floorLine says, under a profile's table, how featcache compares with the floors measured in the same rounds
// (the floor, the epoll floor): throughput, and CPU per request (what featcache's hit path costs above the least
// it could); and how the epoll floor compares with the goroutine floor and with Redis.
func floorLine(b *strings.Builder, targets []*targetResult) {
	byName := map[string]*targetResult{}
	for _, t := range targets {
		if t.Kind == string(kindFloor) || t.Name == "featcache" || t.Kind == string(kindRedis) {
			byName[t.Name] = t
		}
	}
	ok := func(t *targetResult) bool { return t != nil && t.Throughput > 0 && t.CPUPerReqUs > 0 }
	fc, fl, fe, rd := byName["featcache"], byName["floor"], byName["floor-epoll"], byName["redis"]
	if ok(fc) && ok(fl) {
		fmt.Fprintf(b, "featcache next to the floor (bench/floor.go, a minimal GET-from-freecache server): %.2fx its "+
			"req/s, %.2fx its CPU per request (%.1f µs against %.1f µs); p99 %s against %s.\n\n",
			fc.Throughput/fl.Throughput, fc.CPUPerReqUs/fl.CPUPerReqUs, fc.CPUPerReqUs, fl.CPUPerReqUs,
			fmtUs(fc.P99us), fmtUs(fl.P99us))
	}
	if !ok(fe) {
		return
	}
	fmt.Fprintf(b, "The epoll floor (bench/floor_epoll.go, the same server on one thread's epoll loop): %.1f µs of CPU "+
		"per request, p99 %s", fe.CPUPerReqUs, fmtUs(fe.P99us))
	for _, o := range []*targetResult{rd, fl, fc} {
		if ok(o) {
			fmt.Fprintf(b, "; %.2fx %s's req/s, %.2fx its CPU per request", fe.Throughput/o.Throughput, o.Name,
				fe.CPUPerReqUs/o.CPUPerReqUs)
		}
	}
	b.WriteString(".\n\n")
}
