package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// A remote store (a Redis in another zone) is emulated in one of two ways.
//
// netem: the bench re-executes itself inside a network namespace of its own, featcache-bench-<pid>, where Redis,
// featcache and the load generator all run on 127.0.0.1. While a delayed profile runs, the namespace's loopback
// interface has a prio qdisc whose second band is a netem delay, and u32 filters send only the TCP packets to and
// from Redis's port into that band. The kernel holds the packets: the delay costs no user-space CPU, and nothing
// outside the namespace is touched. The parent process stays outside, waits, and deletes the namespace when the
// run ends, on Ctrl-C too.
//
// relay: where no such namespace can be made (no ip or tc, not root, a kernel without sch_netem or sch_prio),
// the bench's user-space relay (relay.go) forwards every byte to Redis after the delay. It runs on the server
// core, so it competes with the measured server for CPU; the report says which of the two ran, and why.

// Environment variables a parent hands to itself re-executed inside the namespace.
const (
	envNetns         = "FEATCACHE_BENCH_NETNS"          // the namespace this process runs in
	envDelayFallback = "FEATCACHE_BENCH_DELAY_FALLBACK" // why the relay stands in for netem
)

// Values of -delay-mode.
const (
	delayAuto  = "auto"  // netem if the namespace can be made, else the relay
	delayNetem = "netem" // netem or fail
	delayRelay = "relay" // the relay, in the bench's usual namespace
)

func checkDelayMode(m string) error {
	switch m {
	case delayAuto, delayNetem, delayRelay:
		return nil
	}
	return fmt.Errorf("-delay-mode %q: want auto, netem or relay", m)
}

// remoteEnv is what this process knows about how to make a store remote.
type remoteEnv struct {
	netns    string // the namespace this process runs in, where netem is available; "" if none
	fallback string // why the relay is used instead, when netns is ""
}

func remoteFromEnv() remoteEnv {
	r := remoteEnv{netns: os.Getenv(envNetns), fallback: os.Getenv(envDelayFallback)}
	if r.netns == "" && r.fallback == "" {
		r.fallback = "-delay-mode relay was given"
	}
	return r
}

// netnsName is the namespace of the run started by this process.
func netnsName() string { return fmt.Sprintf("featcache-bench-%d", os.Getpid()) }

// run runs argv and returns its combined output in the error when it fails.
func runCmd(argv ...string) error {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// createNetns makes the namespace, brings its loopback interface up and checks that the interface takes the
// qdiscs installNetem needs, so that a kernel without them is found before anything runs. On any failure the
// namespace is deleted again and the error says what was missing.
func createNetns(name string) error {
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (Debian: apt-get install iproute2)", tool)
		}
	}
	if err := runCmd("ip", "netns", "add", name); err != nil {
		return err
	}
	in := func(argv ...string) error { return runCmd(append([]string{"ip", "netns", "exec", name}, argv...)...) }
	err := in("ip", "link", "set", "lo", "up")
	if err == nil {
		for _, c := range netemQdiscs(time.Millisecond, 0) {
			out, cerr := exec.Command("ip", append([]string{"netns", "exec", name}, c...)...).CombinedOutput()
			if cerr != nil {
				err = fmt.Errorf("the kernel gives lo no %s qdisc (tc: %s)", qdiscKind(c), strings.TrimSpace(string(out)))
				break
			}
		}
	}
	if err == nil {
		err = in("tc", "qdisc", "del", "dev", "lo", "root")
	}
	if err != nil {
		deleteNetns(name)
		return err
	}
	return nil
}

func deleteNetns(name string) {
	if err := runCmd("ip", "netns", "del", name); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	}
}

// childExit is a re-executed child's failure: it has said why on stderr already, so main only exits with its code.
type childExit int

func (c childExit) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// runInNetns runs argv (this program again) inside the namespace with env, forwards SIGINT and SIGTERM to it,
// waits for it and deletes the namespace.
func runInNetns(name string, argv, env []string) error {
	defer deleteNetns(name)
	cmd := exec.Command("ip", append([]string{"netns", "exec", name}, argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr, cmd.Env = os.Stdin, os.Stdout, os.Stderr, env
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	if err := cmd.Start(); err != nil {
		return err
	}
	// ip netns exec execs argv in the same process, so the signal reaches the bench itself; a Ctrl-C at the
	// terminal reaches it directly too, and a second one is harmless.
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sig:
				cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return childExit(max(ee.ExitCode(), 1))
	}
	return err
}

// netemQdiscs are the tc commands that give lo a prio qdisc with every packet in band 1 by default and a netem
// delay on band 2 (limit 100000 packets, so a burst is never dropped). Jitter makes netem order packets by their
// due times, which can reorder the segments of a TCP stream; it is off unless asked for.
func netemQdiscs(delay, jitter time.Duration) [][]string {
	netem := []string{"tc", "qdisc", "add", "dev", "lo", "parent", "1:2", "handle", "20:", "netem", "limit", "100000",
		"delay", tcTime(delay)}
	if jitter > 0 {
		netem = append(netem, tcTime(jitter))
	}
	return [][]string{
		{"tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "prio", "bands", "2",
			"priomap", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0"},
		netem,
	}
}

// qdiscKind is the kind a "tc qdisc add ... handle H: KIND ..." command adds.
func qdiscKind(argv []string) string {
	for i, a := range argv {
		if a == "handle" && i+2 < len(argv) {
			return argv[i+2]
		}
	}
	return "?"
}

// tcTime writes d in tc's syntax, in whole microseconds.
func tcTime(d time.Duration) string { return fmt.Sprintf("%dus", d.Microseconds()) }

// netemDelay is the delay on one Redis port, installed on lo inside the bench's namespace.
type netemDelay struct {
	commands []string // exactly what ran, for the report
}

// netemCommands are the tc commands that delay every TCP packet to or from port on lo by delay (plus jitter): the
// qdiscs, then a u32 filter per direction into netem's band. A round trip to that port costs twice delay; every
// other port on lo stays in band 1, undelayed.
func netemCommands(port string, delay, jitter time.Duration) [][]string {
	cmds := netemQdiscs(delay, jitter)
	for _, dir := range []string{"dport", "sport"} {
		cmds = append(cmds, []string{"tc", "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1",
			"u32", "match", "ip", "protocol", "6", "0xff", "match", "ip", dir, port, "0xffff", "flowid", "1:2"})
	}
	return cmds
}

// installNetem runs netemCommands in this process's namespace.
func installNetem(port string, delay, jitter time.Duration) (*netemDelay, error) {
	n := &netemDelay{}
	for _, c := range netemCommands(port, delay, jitter) {
		n.commands = append(n.commands, strings.Join(c, " "))
		if err := runCmd(c...); err != nil {
			n.remove()
			return nil, err
		}
	}
	return n, nil
}

// remove takes the qdiscs (and with them the filters) off lo again.
func (n *netemDelay) remove() {
	exec.Command("tc", "qdisc", "del", "dev", "lo", "root").Run()
}

// remoteStore is a profile's Redis made remote, by netem or by the relay.
type remoteStore struct {
	addr  string // where the targets reach Redis: Redis's own address under netem, the relay's otherwise
	relay *proc  // the relay process, when the relay is used
	netem *netemDelay
	res   *remoteResult
}

// makeRemote puts delay (each way) between Redis at redisAddr and everything that reaches it through the returned
// store's addr, and checks that it is real: neither netem (without jitter) nor the relay lets a packet go before
// its delay, so even the fastest of 200 PINGs to Redis must take two delays (less 5% for the clock's reading). A noisy machine
// makes round trips slower, never faster, so the check holds on a busy one too.
func makeRemote(e *env, f *fleet, redisAddr string, delay, jitter time.Duration) (*remoteStore, error) {
	direct, err := measureRTT(redisAddr)
	if err != nil {
		return nil, err
	}
	r := &remoteStore{addr: redisAddr, res: &remoteResult{DelayEachWay: delay.String(), DirectRTTus: us(direct)}}
	if e.remote.netns != "" {
		_, port, _ := net.SplitHostPort(redisAddr)
		if r.netem, err = installNetem(port, delay, jitter); err != nil {
			return nil, err
		}
		r.res.Method, r.res.Namespace, r.res.Commands = "netem", e.remote.netns, r.netem.commands
		if jitter > 0 {
			r.res.Jitter = jitter.String()
		}
	} else {
		if r.addr, r.relay, err = f.startRelay(redisAddr, delay); err != nil {
			return nil, err
		}
		r.res.Method, r.res.Fallback, r.res.CPUs = "relay", e.remote.fallback, "any (not pinned)"
		if e.pin.Enabled {
			r.res.CPUs = e.pin.RelayCPUs
		}
	}
	remote, fastest, err := measureRTTs(r.addr)
	if err != nil {
		r.close()
		return nil, err
	}
	r.res.RemoteRTTus = us(remote)
	least := 2 * delay // with jitter, netem may take up to about two jitters off a packet's delay
	if r.netem != nil && jitter > 0 {
		least = 2 * max(delay-2*jitter, 0)
	}
	if fastest < least*95/100 {
		r.close()
		return nil, fmt.Errorf("%s: the fastest PING to Redis took %v (median %v, %v without the delay): the %v each way is not in effect",
			r.res.Method, fastest, remote, direct, delay)
	}
	return r, nil
}

// close removes netem from lo; the relay is stopped with the fleet.
func (r *remoteStore) close() {
	if r.netem != nil {
		r.netem.remove()
		r.netem = nil
	}
}

// describe is the remote store's progress line.
func (r *remoteResult) describe() string {
	var b strings.Builder
	switch r.Method {
	case "netem":
		fmt.Fprintf(&b, "netem in namespace %s, %s each way on Redis's port", r.Namespace, r.DelayEachWay)
		if r.Jitter != "" {
			fmt.Fprintf(&b, " (jitter %s)", r.Jitter)
		}
	default:
		fmt.Fprintf(&b, "user-space relay (CPU %s), %s each way (%s)", r.CPUs, r.DelayEachWay, r.Fallback)
	}
	fmt.Fprintf(&b, ": PING %s to Redis as the targets reach it, %s straight to Redis without the delay",
		fmtUs(r.RemoteRTTus), fmtUs(r.DirectRTTus))
	if r.FeatcacheRTTus > 0 {
		fmt.Fprintf(&b, ", %s to featcache", fmtUs(r.FeatcacheRTTus))
	}
	return b.String()
}

// markdown is the remote store's paragraph in results.md.
func (r *remoteResult) markdown(b *strings.Builder) {
	switch r.Method {
	case "netem":
		jitter := ""
		if r.Jitter != "" {
			jitter = " and " + r.Jitter + " of jitter"
		}
		fmt.Fprintf(b, "Remote store: **netem** (kernel-side, no user-space CPU). The whole run is inside network "+
			"namespace %s; Redis's port on its loopback interface is delayed %s each way%s, every other port is "+
			"not. Inside the namespace:\n\n```\n%s\n```\n\n", r.Namespace, r.DelayEachWay, jitter, strings.Join(r.Commands, "\n"))
	default:
		fmt.Fprintf(b, "Remote store: the bench's **user-space relay** (%s each way; CPU %s, shared with the servers "+
			"when pinned), used because %s.\n\n", r.DelayEachWay, r.CPUs, r.Fallback)
	}
	fmt.Fprintf(b, "Median PING round trips: %s straight to redis-server before the delay, %s to Redis as the targets "+
		"reach it, %s to featcache's port (answered by featcache).\n\n", fmtUs(r.DirectRTTus), fmtUs(r.RemoteRTTus),
		fmtUs(r.FeatcacheRTTus))
}
