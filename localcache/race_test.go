//go:build race

package localcache

// raceEnabled is set when the tests run with the race detector, whose instrumentation allocates where the plain
// build does not: allocation counts are asserted only without it.
const raceEnabled = true
