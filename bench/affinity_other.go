//go:build !linux

package main

// affinityCPUs cannot read a scheduler affinity on this platform.
func affinityCPUs() (int, bool) { return 0, false }
