//go:build linux && !race

package resp

// raceAcquire is inq_race.go's; without the race detector there is nothing to do.
func raceAcquire(int) {}
