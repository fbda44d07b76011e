//go:build !linux

package main

import (
	"errors"

	"github.com/coocood/freecache"
)

// haveEpollFloor says that this platform has no epoll floor: the bench leaves it out.
const haveEpollFloor = false

// floorEpoll is the epoll floor, which needs Linux's epoll (floor_epoll.go).
type floorEpoll struct{}

func listenFloorEpoll(string, *freecache.Cache) (*floorEpoll, error) {
	return nil, errors.New("the epoll floor needs Linux (epoll)")
}

func (fe *floorEpoll) addr() string { return "" }
func (fe *floorEpoll) serve() error { return nil }
func (fe *floorEpoll) shutdown()    {}
