package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"time"
)

// The relay stands for a store in another zone: a TCP forwarder that holds every byte for a fixed delay in each
// direction before passing it on. It runs as its own process ("bench relay ..."), pinned with the servers.
//
// Per connection and direction, a reader goroutine stamps each chunk it reads with the time it may leave and
// queues it. The delay is the same for every chunk, so due times are in arrival order and one FIFO serves every
// connection: one writer, on its own OS thread, sleeps until the head chunk is due and writes it. Order within
// each byte stream is preserved, and throughput is not limited to one chunk per delay.
//
// The writer sleeps with nanosleep rather than time.Sleep because Go's timers wait in epoll with millisecond
// granularity: a 500µs time.Sleep on an idle process takes over a millisecond, which would double the delay.
// Its timer slack is set to 1µs for the same reason (the kernel's default lets a sleep run 50µs late).

// relayChunk is bytes read from one side at one moment, due to be written to the other side at due. A chunk with
// n == 0 is the end of the stream: the writer half-closes dst, so a close travels through the relay in order.
type relayChunk struct {
	due time.Time
	dst *relayEnd
	buf *[]byte
	n   int
}

// relayEnd is one side's socket as the writer sees it.
type relayEnd struct {
	conn *net.TCPConn
	pair *relayPair
}

// relayPair is a relayed connection. Only the writer touches its fields: once both directions have ended, or a
// write has failed, both sockets are closed and later chunks for them are dropped.
type relayPair struct {
	client, server *net.TCPConn
	ended          int
	closed         bool
}

func (p *relayPair) close() {
	p.closed = true
	p.client.Close()
	p.server.Close()
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// runRelay is the "relay" subcommand: bench relay -listen ADDR -upstream ADDR -delay 500us.
func runRelay(args []string) error {
	fs := flag.NewFlagSet("relay", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to accept clients on")
	upstream := fs.String("upstream", "", "address every accepted connection is relayed to")
	delay := fs.Duration("delay", 500*time.Microsecond, "delay added in each direction")
	fs.Parse(args)
	if *upstream == "" {
		return fmt.Errorf("relay: -upstream is required")
	}
	// Pinned to one CPU the runtime would have one P, which the writer holds while it sleeps in a system call:
	// a second P keeps the readers running meanwhile.
	runtime.GOMAXPROCS(2)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "relay %s -> %s, %v each way\n", ln.Addr(), *upstream, *delay)
	q := make(chan relayChunk, 1<<16)
	go relayWriter(q)
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go relayConn(c.(*net.TCPConn), *upstream, *delay, q)
	}
}

func relayConn(client *net.TCPConn, upstream string, delay time.Duration, q chan<- relayChunk) {
	sc, err := net.DialTimeout("tcp", upstream, 5*time.Second)
	if err != nil {
		client.Close()
		return
	}
	server := sc.(*net.TCPConn)
	client.SetNoDelay(true)
	server.SetNoDelay(true)
	p := &relayPair{client: client, server: server}
	go relayRead(client, &relayEnd{conn: server, pair: p}, delay, q)
	go relayRead(server, &relayEnd{conn: client, pair: p}, delay, q)
}

// relayRead queues what src sends for dst, each chunk due delay after it was read, and finally the end of stream.
func relayRead(src *net.TCPConn, dst *relayEnd, delay time.Duration, q chan<- relayChunk) {
	for {
		b := chunkPool.Get().(*[]byte)
		n, err := src.Read(*b)
		if n > 0 {
			q <- relayChunk{due: time.Now().Add(delay), dst: dst, buf: b, n: n}
		} else {
			chunkPool.Put(b)
		}
		if err != nil {
			q <- relayChunk{due: time.Now().Add(delay), dst: dst}
			return
		}
	}
}

// relayWriter writes every chunk at its due time, in queue order.
func relayWriter(q <-chan relayChunk) {
	runtime.LockOSThread()
	exactTimerSlack()
	for c := range q {
		for {
			d := time.Until(c.due)
			if d <= 0 {
				break
			}
			threadSleep(d) // woken early (EINTR): the loop sleeps the rest
		}
		p := c.dst.pair
		switch {
		case p.closed:
		case c.n == 0:
			c.dst.conn.CloseWrite()
			if p.ended++; p.ended == 2 {
				p.close()
			}
		default:
			if _, err := c.dst.conn.Write((*c.buf)[:c.n]); err != nil {
				p.close()
			}
		}
		if c.buf != nil {
			chunkPool.Put(c.buf)
		}
	}
}
