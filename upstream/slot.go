package upstream

import "bytes"

// SlotCount is the number of hash slots of a Redis Cluster.
const SlotCount = 16384

// NoSlot stands for a command without keys: any master may run it.
const NoSlot = -1

// Slot returns the Redis Cluster hash slot of key, as Redis computes it (keyHashSlot in cluster.c): CRC16 (XMODEM)
// of the key modulo 16384, or of its hash tag, the bytes between the first '{' and the first '}' after it, when
// those are not empty. Keys sharing a hash tag ("{user42}:profile", "{user42}:spend") share a slot.
func Slot(key []byte) uint16 {
	if i := bytes.IndexByte(key, '{'); i >= 0 {
		if j := bytes.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return crc16(key) & (SlotCount - 1)
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), Redis's crc16.c, two bytes per step: the two table
// lookups of a step are independent, where the byte-at-a-time loop makes each wait for the one before. Slot runs
// on every lookup of the local tier in front of a cluster, so this halves what it adds there.
func crc16(b []byte) uint16 {
	var crc uint16
	for ; len(b) >= 2; b = b[2:] {
		crc = crc16Table2[byte(crc>>8)^b[0]] ^ crc16Table[byte(crc)^b[1]]
	}
	if len(b) == 1 {
		crc = crc<<8 ^ crc16Table[byte(crc>>8)^b[0]]
	}
	return crc
}

// crc16Table[x] is the CRC of byte x from state 0; crc16Table2[x] is that CRC followed by one zero byte.
var crc16Table, crc16Table2 = func() (t, t2 [256]uint16) {
	for i := range t {
		crc := uint16(i) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		t[i] = crc
	}
	for i := range t2 {
		t2[i] = t[i]<<8 ^ t[byte(t[i]>>8)]
	}
	return t, t2
}()
