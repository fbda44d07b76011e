//go:build linux && !race

package proxy

// raceWrote is race_linux.go's; without the race detector there is nothing to do.
func raceWrote(uintptr) {}
