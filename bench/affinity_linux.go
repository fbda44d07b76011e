package main

import "golang.org/x/sys/unix"

// affinityCPUs returns how many CPUs this process may run on (its scheduler affinity), or false if it cannot be read.
func affinityCPUs() (int, bool) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 0, false
	}
	return set.Count(), true
}
