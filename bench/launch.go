package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
)

// Launching: the bench re-executes itself pinned under taskset (or inside a network namespace for a remote store:
// netns.go), and finds or builds the featcache binary it measures.

// Environment variables the parent hands to itself re-executed under taskset.
const (
	envPinned    = "FEATCACHE_BENCH_PINNED"
	envScratch   = "FEATCACHE_BENCH_SCRATCH"
	envFeatcache = "FEATCACHE_BENCH_FEATCACHE"
	envFrom      = "FEATCACHE_BENCH_FROM"
)

// The child is the re-executed process: it finds the scratch folder and featcache's binary in envScratch and
// envFeatcache, envPinned when taskset pinned it, and envNetns or envDelayFallback for the remote store.

// decidePinning turns -pin and the CPU count into where things run.
func decidePinning(inv invocation) pinning {
	p := pinning{ServerCPUs: inv.serverCPUs, ClientCPUs: inv.clientCPUs, RelayCPUs: inv.relayCPUs}
	if p.RelayCPUs == "" {
		p.RelayCPUs = p.ServerCPUs
	}
	cpus := runtime.NumCPU()
	if n, ok := affinityCPUs(); ok && os.Getenv(envPinned) == "" {
		cpus = n
	}
	switch {
	case !inv.pin:
		p.Reason = "-pin=false"
	case os.Getenv(envPinned) != "":
		p.Enabled = true
	case cpus < 2:
		p.Reason = fmt.Sprintf("%d CPU available", cpus)
	default:
		if _, err := exec.LookPath("taskset"); err != nil {
			p.Reason = "taskset not found (Debian: util-linux)"
		} else {
			p.Enabled = true
		}
	}
	return p
}

// relaunch re-executes this program for the measured part, when it must run elsewhere than here: under taskset
// on the client CPUs (pin), and inside a network namespace of its own (netns) so that netem can delay Redis's
// port. featcache is built first, with every core, and handed over with the scratch folder in the environment.
// If the namespace cannot be made, mode auto falls back to the relay (the child is told why) and mode netem
// fails. handled is false when nothing had to move: the caller goes on in this process.
func relaunch(args []string, pin pinning, netns bool, mode, featcacheFlag, root string) (handled bool, err error) {
	if !pin.Enabled && !netns {
		return false, nil
	}
	var fallback, name string
	if netns {
		name = netnsName()
		if err := createNetns(name); err != nil {
			if mode == delayNetem {
				return true, fmt.Errorf("-delay-mode netem: %w", err)
			}
			fallback = "no netem namespace: " + err.Error()
			fmt.Fprintf(os.Stderr, "bench: %s; the relay stands in\n", fallback)
			name = ""
		}
	}
	if !pin.Enabled && name == "" {
		if fallback != "" {
			os.Setenv(envDelayFallback, fallback)
		}
		return false, nil
	}
	scratch, bin, from, err := newScratch("featcache-bench-", featcacheFlag, root)
	if err != nil {
		if name != "" {
			deleteNetns(name)
		}
		return true, err
	}
	self, err := os.Executable()
	if err != nil {
		return true, err
	}
	env := append(os.Environ(), envScratch+"="+scratch, envFeatcache+"="+bin, envFrom+"="+from)
	argv := append([]string{self}, args...)
	if pin.Enabled {
		env = append(env, envPinned+"=1")
		argv = append([]string{"taskset", "-c", pin.ClientCPUs}, argv...)
	}
	if fallback != "" {
		env = append(env, envDelayFallback+"="+fallback)
	}
	if name == "" {
		path, err := exec.LookPath(argv[0])
		if err != nil {
			return true, err
		}
		return true, syscall.Exec(path, argv, env)
	}
	defer os.RemoveAll(scratch) // the child removes it too; this covers a child that was killed
	return true, runInNetns(name, argv, append(env, envNetns+"="+name))
}

// moduleRoot is the folder of the featcache module this program is part of: the working directory or one
// above it holding go.mod.
func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.HasPrefix(string(b), "module featcache") {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// featcacheBinary returns the featcache binary to run: flag names a binary, or a source folder (default the
// module root) that is built into scratch. from says what it was built from, for the report.
func featcacheBinary(flagValue, root, scratch string) (bin, from string, err error) {
	src := root
	if flagValue != "" {
		fi, err := os.Stat(flagValue)
		if err != nil {
			return "", "", err
		}
		if !fi.IsDir() {
			return flagValue, flagValue, nil
		}
		src = flagValue
	}
	bin = filepath.Join(scratch, "featcache")
	fmt.Fprintf(os.Stderr, "bench: building featcache from %s\n", src)
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("building featcache in %s: %w\n%s", src, err, out)
	}
	from = src
	if rev, err := exec.Command("git", "-C", src, "rev-parse", "--short", "HEAD").Output(); err == nil {
		from += " at " + strings.TrimSpace(string(rev))
		// --no-optional-locks: only look; never refresh the index of a tree others are working in.
		st, _ := exec.Command("git", "-C", src, "--no-optional-locks", "status", "--porcelain", "-uno").Output()
		if len(strings.TrimSpace(string(st))) > 0 {
			from += " with uncommitted changes"
		}
	}
	return bin, from, nil
}

// newScratch makes a scratch folder named after prefix and the featcache binary to run there (featcacheBinary:
// featcacheFlag is -featcache's value); the caller removes the folder.
func newScratch(prefix, featcacheFlag, root string) (scratch, bin, from string, err error) {
	if scratch, err = os.MkdirTemp("", prefix); err != nil {
		return "", "", "", err
	}
	if bin, from, err = featcacheBinary(featcacheFlag, root, scratch); err != nil {
		os.RemoveAll(scratch)
		return "", "", "", err
	}
	return scratch, bin, from, nil
}

// lab is what a sub-command (memory, staleness, feast) measures in: a scratch folder, the featcache binary, and a
// fleet of processes in the folder with redis-server started.
type lab struct {
	scratch, bin, from string
	fleet              *fleet
	redisAddr          string
	redisProc          *proc
}

// openLab makes a lab: a new scratch folder named after prefix and its binary (newScratch), or, with inherit in
// the re-executed child, the folder and binary the parent handed down (envScratch, envFeatcache); then it starts
// redis-server. close stops the fleet and removes the folder.
func openLab(prefix, featcacheFlag, root string, inherit bool) (*lab, error) {
	l := &lab{}
	if inherit {
		l.scratch, l.bin = os.Getenv(envScratch), os.Getenv(envFeatcache)
	}
	if l.scratch == "" {
		var err error
		if l.scratch, l.bin, l.from, err = newScratch(prefix, featcacheFlag, root); err != nil {
			return nil, err
		}
	}
	l.fleet = &fleet{dir: l.scratch}
	var err error
	if l.redisAddr, l.redisProc, err = l.fleet.startRedis("redis-server"); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

// labCommand is a sub-command that measures in a lab of its own (memory, staleness, tracking): its flags, which
// include -featcache.
type labCommand struct {
	*flag.FlagSet
	featcache string
}

// newLabCommand returns the sub-command name with its -featcache flag.
func newLabCommand(name string) *labCommand {
	c := &labCommand{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError)}
	c.StringVar(&c.featcache, "featcache", "", "featcache binary, or the module directory to build it from (default: this module)")
	return c
}

// open parses args and opens the command's lab (openLab) in a scratch folder named after the command.
func (c *labCommand) open(args []string) (*lab, error) {
	if err := c.Parse(args); err != nil {
		return nil, err
	}
	return openLab("featcache-"+c.Name()+"-", c.featcache, moduleRoot(), false)
}

// close stops every process of the lab, then removes its folder.
func (l *lab) close() {
	l.fleet.stopAll()
	os.RemoveAll(l.scratch)
}
