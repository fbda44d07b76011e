package upstream

// SlotCount is the number of hash slots of a Redis Cluster.
const SlotCount = 16384

// NoSlot stands for a command without keys: any master may run it.
const NoSlot = -1

// Slot returns the Redis Cluster hash slot of key, as Redis computes it (keyHashSlot in cluster.c): CRC16 (XMODEM)
// of the key modulo 16384, or of its hash tag, the bytes between the first '{' and the first '}' after it, when
// those are not empty. Keys sharing a hash tag ("{user42}:profile", "{user42}:spend") share a slot.
func Slot(key []byte) uint16 {
	for i, b := range key {
		if b == '{' {
			for j := i + 1; j < len(key); j++ {
				if key[j] == '}' {
					if j > i+1 {
						key = key[i+1 : j]
					}
					break
				}
			}
			break
		}
	}
	return crc16(key) & (SlotCount - 1)
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), Redis's crc16.c.
func crc16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc = crc<<8 ^ crc16Table[byte(crc>>8)^c]
	}
	return crc
}

var crc16Table = func() (t [256]uint16) {
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
	return t
}()
