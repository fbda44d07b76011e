//go:build !long

package proxy

// longRun is true under -tags long, which runs the long variants of the fault and chaos tests.
const longRun = false
