package upstream

import (
	"featcache/internal/commands"
	"featcache/internal/resp"
)

// Payload is the commands of one round trip: their RESP bytes, and what the cluster router needs to send each to
// the master that serves it without reading them again. Each command's hash slot is computed once, when it is
// appended (as rueidis's commands carry theirs): from its key, or from its keys as the command table's key specs
// find them. A transaction, from Multi to Exec, is one unit that travels whole to the master of its first keyed
// command. In front of a single node only the bytes matter.
//
// The zero Payload is empty and ready to use; Reset empties it for the next round trip and keeps its memory. A
// Payload is not safe for concurrent use, and must not change while a round trip that sends it is in flight.
type Payload struct {
	b     []byte
	n     int    // commands
	units []span // where each unit ends, how many commands it has, its slot
	open  bool   // the last unit is a transaction that Exec has not closed yet
	resp3 bool   // AppendHello(3) switched the commands appended since to RESP3
}

// span is one unit of a Payload: a command, or a transaction from MULTI to EXEC, which the router sends to one
// node, whole.
type span struct {
	end    int  // where it ends in b; it starts where the one before ends
	frames int  // its commands, and so its reply frames
	slot   int  // the slot it is routed by: its first keyed command's, NoSlot for none
	tx     bool // a MULTI ... EXEC, sent again whole after a redirect
	// hello marks a HELLO appended by AppendHello; resp3 says that the unit runs in RESP3 (for a HELLO: that the
	// units after it do).
	hello, resp3 bool
	writes       bool // it may write (Payload.Writes): in front of a cluster, its node's group travels with writes
}

var (
	multiCmd = resp.AppendCommand(nil, "MULTI")
	execCmd  = resp.AppendCommand(nil, "EXEC")
)

// Bytes returns the commands' RESP bytes. They belong to the Payload and change with it.
func (p *Payload) Bytes() []byte { return p.b }

// Len is the number of commands, which is the number of reply frames they ask for.
func (p *Payload) Len() int { return p.n }

// Size is the length of the commands' RESP bytes.
func (p *Payload) Size() int { return len(p.b) }

// Cap is the capacity of the buffer the commands' bytes are kept in: what an empty payload holds on to. An owner
// that does not want to keep a large one replaces the Payload with a zero one.
func (p *Payload) Cap() int { return cap(p.b) }

// Reset empties the payload and keeps its memory.
func (p *Payload) Reset() {
	p.b, p.n, p.units, p.open, p.resp3 = p.b[:0], 0, p.units[:0], false, false
}

// Writes reports whether the payload holds a command that CLIENT PAUSE WRITE may hold: one appended by Append
// that Redis does not flag readonly (EVAL, PUBLISH and commands Redis does not know included), or one that may
// change its keys (PFCOUNT), or a transaction (AppendTx). Featcache's own reads (AppendFetch, AppendKey) and the
// commands appended without their Info (AppendArgs, AppendCommand, AppendRaw: cached reads forwarded as they
// are, CONFIG GET, SCAN, HELLO) are not writes. The Pool keeps payloads with writes apart from the others, so
// that a paused write never holds a read queued behind it on the same connection.
func (p *Payload) Writes() bool {
	for i := range p.units {
		if p.units[i].writes {
			return true
		}
	}
	return false
}

var (
	hello3Cmd = resp.AppendCommand(nil, "HELLO", "3")
	hello2Cmd = resp.AppendCommand(nil, "HELLO", "2")
)

// AppendHello appends HELLO 3 (proto 3) or HELLO 2 (any other proto): the commands appended after it, until the
// next AppendHello, run in that protocol, and the payload's connection is left in it. A payload that switches to
// RESP3 must switch back before it ends: shared connections speak RESP2.
//
// In front of a single node the HELLO is sent as it is, between the commands. The cluster router sends each
// node's part of the payload wrapped in HELLO 3 ... HELLO 2 wherever it holds RESP3 commands (also when they are
// sent again after a redirect), and answers a HELLO it did not send as it is with the reply of one it sent for
// the same commands (see Cluster.Do).
func (p *Payload) AppendHello(proto int) {
	if proto == 3 {
		p.b = append(p.b, hello3Cmd...)
	} else {
		p.b = append(p.b, hello2Cmd...)
	}
	p.resp3 = proto == 3
	p.added(NoSlot)
	p.units[len(p.units)-1].hello = true
}

// Append appends one command: raw, the command's RESP bytes as a client sent them, or when raw is nil args
// encoded as a RESP array. Its slot is its first key's, as info's key specs find the keys in args (NoSlot when
// info is nil, an unknown command, or finds none). args is not retained.
func (p *Payload) Append(info *commands.Info, args [][]byte, raw []byte) {
	slot := NoSlot
	if key := info.RoutingKey(args); key != nil {
		slot = int(Slot(key))
	}
	if raw != nil {
		p.b = append(p.b, raw...)
	} else {
		p.b = resp.AppendArgs(p.b, args)
	}
	p.added(slot)
	if mayWrite(info) {
		p.units[len(p.units)-1].writes = true
	}
}

// mayWrite reports whether CLIENT PAUSE WRITE may hold the command of info: Redis does not flag it readonly (EVAL,
// PUBLISH and commands Redis does not know included), or its key specs may change its keys (PFCOUNT).
func mayWrite(info *commands.Info) bool {
	return info == nil || info.Flags&commands.FlagReadonly == 0 || info.MayWrite()
}

// AppendArgs appends args as one command routed by slot (NoSlot: any master may run it).
func (p *Payload) AppendArgs(slot int, args [][]byte) {
	p.b = resp.AppendArgs(p.b, args)
	p.added(slot)
}

// AppendCommand appends args as one command routed by slot (NoSlot: any master may run it).
func (p *Payload) AppendCommand(slot int, args ...string) {
	p.b = resp.AppendCommand(p.b, args...)
	p.added(slot)
}

// AppendRaw appends one command already encoded (raw), routed by slot (NoSlot: any master may run it).
func (p *Payload) AppendRaw(slot int, raw []byte) {
	p.b = append(p.b, raw...)
	p.added(slot)
}

// AppendKey appends "name key", routed by key.
func (p *Payload) AppendKey(name string, key []byte) {
	p.b = AppendKeyCommand(p.b, name, key)
	p.added(int(Slot(key)))
}

// AppendFetch appends GET key and PTTL key (AppendFetch's commands, read with ParseFetched), routed by key.
func (p *Payload) AppendFetch(key []byte) {
	slot := int(Slot(key))
	p.b = AppendKeyCommand(p.b, "GET", key)
	p.added(slot)
	p.b = AppendKeyCommand(p.b, "PTTL", key)
	p.added(slot)
}

// AppendHashFetch appends the commands AppendHashFetch writes (HashFetchFrames of them), routed by key.
func (p *Payload) AppendHashFetch(key []byte, fields [][]byte, all, fieldTTL bool) {
	slot := int(Slot(key))
	p.b = appendHashRead(p.b, key, fields, all)
	p.added(slot)
	p.b = AppendKeyCommand(p.b, "PTTL", key)
	p.added(slot)
	if fieldTTL && !all {
		p.b = appendFieldTTL(p.b, key, fields)
		p.added(slot)
	}
}

// AppendTx appends MULTI, the n commands of queued (already encoded), and EXEC: a transaction that goes whole to
// the master of slot.
func (p *Payload) AppendTx(slot int, queued []byte, n int) {
	p.Multi()
	p.b = append(p.b, queued...)
	u := &p.units[len(p.units)-1]
	p.n, u.end, u.frames, u.slot, u.writes = p.n+n, len(p.b), u.frames+n, slot, true
	p.Exec()
}

// Multi appends MULTI and opens a transaction: the commands appended until Exec travel with it, whole, to the
// master of the first of them that has a key.
func (p *Payload) Multi() {
	p.open = false
	p.b = append(p.b, multiCmd...)
	p.added(NoSlot)
	p.units[len(p.units)-1].tx = true
	p.open = true
}

// Exec appends EXEC and closes the transaction Multi opened.
func (p *Payload) Exec() {
	p.b = append(p.b, execCmd...)
	p.added(NoSlot)
	p.open = false
}

// added records one command just appended to b, routed by slot: a unit of its own, or part of the open
// transaction.
func (p *Payload) added(slot int) {
	p.n++
	if p.open {
		u := &p.units[len(p.units)-1]
		u.end, u.frames = len(p.b), u.frames+1
		if u.slot == NoSlot {
			u.slot = slot
		}
		return
	}
	p.units = append(p.units, span{end: len(p.b), frames: 1, slot: slot, resp3: p.resp3})
}
