//go:build linux && race

package proxy

import "syscall"

// raceWrote makes a write the event loop made as a raw system call synchronise, for the race detector, with the
// reads of its bytes, as syscall.Write does (it releases the syscall package's ioSync, which syscall.Read
// acquires): a write of no bytes through syscall.Write does that. Race builds only.
func raceWrote(fd uintptr) { syscall.Write(int(fd), nil) }
