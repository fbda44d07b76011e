//go:build linux && race

package resp

import "syscall"

// raceAcquire makes a read through recvmsg synchronise, for the race detector, with the writes that sent its
// bytes, as syscall.Read does (it acquires the syscall package's ioSync, which syscall.Write releases): a read of
// no bytes through syscall.Read does that. Race builds only.
func raceAcquire(fd int) { syscall.Read(fd, nil) }
