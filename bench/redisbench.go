package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// rbTest is one redis-benchmark invocation, run against every target in turn.
type rbTest struct {
	Name     string // as shown in the report
	Command  string // -t argument
	Pipeline int    // -P argument
	Scale    int    // multiple of -rb-requests, so pipelined runs last about as long as unpipelined ones
}

var rbTests = []rbTest{
	{"GET 1 KiB -P 1", "get", 1, 1},
	{"GET 1 KiB -P 16", "get", 16, 4},
	{"SET 1 KiB -P 1", "set", 1, 1},
}

// rbRun is one redis-benchmark run's --csv line; latencies in milliseconds, as redis-benchmark reports them.
type rbRun struct {
	RPS   float64 `json:"rps"`
	AvgMs float64 `json:"avg_ms"`
	P50Ms float64 `json:"p50_ms"`
	P95Ms float64 `json:"p95_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

// rbResult is one test against one target: every round's run and the medians across them.
type rbResult struct {
	Test    string  `json:"test"`
	Target  string  `json:"target"`
	Command string  `json:"command"`
	Runs    []rbRun `json:"runs"`
	RPS     float64 `json:"median_rps"`
	P50Ms   float64 `json:"median_p50_ms"`
	P99Ms   float64 `json:"median_p99_ms"`
}

// rbArgs is redis-benchmark's command line for test against addr: 50 clients, 1 KiB values, keys
// key:000000000000 .. key:<keys-1> (pre-populated so GETs hit values).
func rbArgs(addr string, t rbTest, keys, requests int) []string {
	host, port, _ := net.SplitHostPort(addr)
	return []string{"redis-benchmark", "-h", host, "-p", port, "-c", "50", "-n", strconv.Itoa(requests * t.Scale),
		"-d", "1024", "-r", strconv.Itoa(keys), "-t", t.Command, "-P", strconv.Itoa(t.Pipeline), "--csv"}
}

func runRedisBenchmark(pin pinning, args []string) (rbRun, error) {
	argv := pin.wrap(pin.ClientCPUs, args)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return rbRun{}, fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, lastLine(stderr.String()))
	}
	return parseRBCSV(stdout.Bytes())
}

// parseRBCSV reads redis-benchmark 7's --csv output: a header line
// "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
// and one line per test. Columns are looked up by name, so an older layout without percentiles still parses.
func parseRBCSV(out []byte) (rbRun, error) {
	recs, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil || len(recs) < 2 {
		return rbRun{}, fmt.Errorf("unexpected redis-benchmark output %q", out)
	}
	col := map[string]int{}
	for i, name := range recs[0] {
		col[name] = i
	}
	row := recs[len(recs)-1]
	get := func(name string) float64 {
		i, ok := col[name]
		if !ok || i >= len(row) {
			return 0
		}
		v, _ := strconv.ParseFloat(row[i], 64)
		return v
	}
	r := rbRun{RPS: get("rps"), AvgMs: get("avg_latency_ms"), P50Ms: get("p50_latency_ms"),
		P95Ms: get("p95_latency_ms"), P99Ms: get("p99_latency_ms"), MaxMs: get("max_latency_ms")}
	if r.RPS <= 0 {
		return r, fmt.Errorf("redis-benchmark reported no throughput: %q", out)
	}
	return r, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func redisBenchmarkVersion() string {
	out, err := exec.Command("redis-benchmark", "--version").Output()
	if err != nil {
		return "not found"
	}
	return strings.TrimSpace(string(out))
}
