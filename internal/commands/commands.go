// Package commands is Redis's command table as featcache reads it: every command's arity, flags and Redis 7 key
// specs, parsed once from the upstream's COMMAND reply (Parse), or from Redis 7.0's reply embedded in the binary
// (Embedded) until the upstream answers; the key extraction that follows the key specs (Info.Keys), which the
// request path uses to invalidate what a write touches and the cluster router to send a command to the master of
// its keys; and which commands may change keys (Info.MayWrite). Nothing here knows a command by name: the
// upstream's table is the single source, so a new Redis version or a module brings its commands with it. The
// classes featcache gives commands (cached read, write, local, ...) are the proxy's business, built on this table.
//
// What Redis 7.0 (checked against 7.0.15) cannot name in advance, as its COMMAND reply declares it:
//
//   - SORT: two key specs of type unknown, one for the BY/GET patterns (keys derived from the sorted values) and one
//     for STORE (the keyword may appear anywhere). Keys returns the sorted key and complete=false.
//   - SORT_RO: one unknown spec for BY/GET. Keys returns the sorted key and complete=false.
//   - MIGRATE: the KEYS keyword spec is flagged incomplete: it is searched from the end, so a key named "KEYS" hides
//     the keys before it. Without the KEYS keyword the single key argument is all there is (complete); with it Keys
//     returns the key argument (then "", as the syntax requires) and the keys after KEYS, and complete=false.
//
// Specs flagged not_key (the shard channels of SPUBLISH, SSUBSCRIBE, SUNSUBSCRIBE) are skipped. SET and BITFIELD
// carry variable_flags (whether they read depends on the arguments); their key positions are still exact.
//
// Complete key specs do not make a command's effect on the keyspace fully known: commands without key specs touch
// keys too (FLUSHALL, FLUSHDB, SWAPDB, FUNCTION RESTORE/FLUSH, ...), scripts may touch keys they did not declare, and
// COPY ... DB or MOVE name keys of another database. Classifying those is the request path's job, not the table's.
package commands

import (
	"bytes"

	"featcache/internal/resp"
)

// Flags is the set of command flags Redis reports in COMMAND (the third element of each entry).
type Flags uint64

// Command flags, one per name Redis 7.0 can report. Names Redis adds later are ignored by Parse.
const (
	FlagWrite           Flags = 1 << iota // "write": may modify the keyspace
	FlagReadonly                          // "readonly": reads keys and never modifies them
	FlagDenyOOM                           // "denyoom": refused when Redis is over maxmemory
	FlagModule                            // "module": implemented by a module
	FlagAdmin                             // "admin": administrative command
	FlagPubSub                            // "pubsub": publish/subscribe command
	FlagNoScript                          // "noscript": not allowed from scripts
	FlagBlocking                          // "blocking": may block the client
	FlagLoading                           // "loading": allowed while the dataset is loading
	FlagStale                             // "stale": allowed on a replica with stale data
	FlagSkipMonitor                       // "skip_monitor": not shown in MONITOR
	FlagSkipSlowlog                       // "skip_slowlog": not shown in SLOWLOG
	FlagAsking                            // "asking": allowed on an importing cluster slot after ASKING
	FlagFast                              // "fast": O(1) or O(log N)
	FlagNoAuth                            // "no_auth": allowed before AUTH
	FlagMayReplicate                      // "may_replicate": may be propagated; Redis 7.0 hides it from COMMAND
	FlagNoMandatoryKeys                   // "no_mandatory_keys": its key arguments may all be absent
	FlagNoAsyncLoading                    // "no_async_loading": refused during async loading
	FlagNoMulti                           // "no_multi": not allowed inside MULTI
	FlagMovableKeys                       // "movablekeys": key positions depend on the arguments
	FlagAllowBusy                         // "allow_busy": allowed while a script or function is busy
)

// Has reports whether every flag of x is set in f.
func (f Flags) Has(x Flags) bool { return f&x == x }

// commandFlags maps each flag name of the COMMAND reply to its bit; Parse ignores the names it does not hold.
var commandFlags = map[string]Flags{
	"write": FlagWrite, "readonly": FlagReadonly, "denyoom": FlagDenyOOM, "module": FlagModule, "admin": FlagAdmin,
	"pubsub": FlagPubSub, "noscript": FlagNoScript, "blocking": FlagBlocking, "loading": FlagLoading,
	"stale": FlagStale, "skip_monitor": FlagSkipMonitor, "skip_slowlog": FlagSkipSlowlog, "asking": FlagAsking,
	"fast": FlagFast, "no_auth": FlagNoAuth, "may_replicate": FlagMayReplicate,
	"no_mandatory_keys": FlagNoMandatoryKeys, "no_async_loading": FlagNoAsyncLoading, "no_multi": FlagNoMulti,
	"movablekeys": FlagMovableKeys, "allow_busy": FlagAllowBusy,
}

// KeySpecFlags is the set of flags of one key spec: how the command accesses the keys the spec finds.
type KeySpecFlags uint32

// Key spec flags, as Redis 7.0 names them in COMMAND. Unknown names are ignored by Parse.
const (
	KeyRO            KeySpecFlags = 1 << iota // "RO": read only
	KeyRW                                     // "RW": read and modified
	KeyOW                                     // "OW": overwritten without being read
	KeyRM                                     // "RM": deleted
	KeyAccess                                 // "access": the user data of the key is returned or used
	KeyUpdate                                 // "update": the value is updated or replaced
	KeyInsert                                 // "insert": data is added, nothing is modified or deleted
	KeyDelete                                 // "delete": data is deleted
	KeyNotKey                                 // "not_key": the argument is not a key (a shard channel); Keys skips it
	KeyIncomplete                             // "incomplete": the spec may miss keys
	KeyVariableFlags                          // "variable_flags": the flags above depend on the arguments
)

// Has reports whether every flag of x is set in f.
func (f KeySpecFlags) Has(x KeySpecFlags) bool { return f&x == x }

// keySpecFlags maps each key spec flag name of the COMMAND reply to its bit; Parse ignores the names it does not
// hold.
var keySpecFlags = map[string]KeySpecFlags{
	"RO": KeyRO, "RW": KeyRW, "OW": KeyOW, "RM": KeyRM, "access": KeyAccess, "update": KeyUpdate, "insert": KeyInsert,
	"delete": KeyDelete, "not_key": KeyNotKey, "incomplete": KeyIncomplete, "variable_flags": KeyVariableFlags,
}

// BeginSearchType says how a key spec finds the position its keys start from.
type BeginSearchType uint8

// Begin search types. The zero value is BeginUnknown, so a spec nobody filled in never claims to know its keys.
const (
	BeginUnknown BeginSearchType = iota // Redis cannot say where the keys begin
	BeginIndex                          // the keys begin at a fixed argument index
	BeginKeyword                        // the keys begin after a keyword
)

// BeginSearch is the begin_search part of a key spec.
type BeginSearch struct {
	Type BeginSearchType
	// Index is the argument index (the command name is 0) where the keys begin, for BeginIndex.
	Index int
	// Keyword is matched case-insensitively against the arguments, for BeginKeyword; the keys begin after it.
	Keyword string
	// StartFrom is where the keyword search starts, for BeginKeyword: a positive value searches forwards from that
	// index, a negative one backwards from that many arguments before the end.
	StartFrom int
}

// FindKeysType says how a key spec finds its keys once it knows where they begin.
type FindKeysType uint8

// Find keys types. The zero value is FindUnknown.
const (
	FindUnknown FindKeysType = iota // Redis cannot say which arguments are keys
	FindRange                       // keys are a range of arguments
	FindKeynum                      // an argument counts the keys that follow it
)

// FindKeys is the find_keys part of a key spec.
type FindKeys struct {
	Type FindKeysType
	// LastKey is, for FindRange, the index of the last key relative to the first one; a negative value counts from
	// the end of the arguments (-1 is the last argument), or, with Limit, is -1.
	LastKey int
	// KeyStep is the distance between two keys, for FindRange and FindKeynum (2 for key/value pairs).
	KeyStep int
	// Limit, for FindRange with LastKey -1, keeps only the first 1/Limit of the remaining arguments
	// (XREAD's STREAMS k1 k2 id1 id2 has Limit 2). Zero means no limit.
	Limit int
	// KeyNumIdx is, for FindKeynum, the index of the key count relative to where the keys begin.
	KeyNumIdx int
	// FirstKey is, for FindKeynum, the index of the first key relative to where the keys begin.
	FirstKey int
}

// KeySpec is one of a command's Redis 7 key specs: where a group of its keys is and how the command uses them.
type KeySpec struct {
	Flags       KeySpecFlags
	BeginSearch BeginSearch
	FindKeys    FindKeys
}

// Info is Redis's metadata for one command or subcommand. A table built by Parse is never modified
// afterwards, so its Infos are safe for concurrent use.
type Info struct {
	// Name is the lower-case name; a subcommand is named "container|sub", e.g. "client|setname", as Redis names it
	// in COMMAND and in its error replies.
	Name string
	// Arity is Redis's arity: positive is the exact number of arguments (the name included), negative is at least
	// -Arity arguments. A subcommand's arity counts the container and the subcommand name.
	Arity int
	// Flags are the command flags.
	Flags Flags
	// FirstKey, LastKey and KeyStep are the legacy key positions (LastKey may be negative, counting from the end).
	// They are 0 for commands whose keys a range cannot describe; KeySpecs is what Keys follows.
	FirstKey, LastKey, KeyStep int
	// KeySpecs are the command's key specs, in Redis's order.
	KeySpecs []KeySpec
	// Subcommands holds the subcommands by lower-case name ("setname"); nil if the command has none.
	Subcommands map[string]*Info
}

// Table is the command table: lower-case command name to its metadata. Lookups are safe for concurrent use; the
// table is built once by Parse and not modified afterwards.
type Table map[string]*Info

// Lookup returns the metadata for the command line args (args[0] is the command name, in any case): for a command
// with subcommands, the subcommand named by args[1] (case-insensitive) if there is one, else the container. It returns
// nil for an unknown command or empty args. Lookup does not allocate.
func (c Table) Lookup(args [][]byte) *Info {
	if len(args) == 0 {
		return nil
	}
	ci := lookupFold(c, args[0])
	if ci == nil || ci.Subcommands == nil || len(args) < 2 {
		return ci
	}
	if sub := lookupFold(ci.Subcommands, args[1]); sub != nil {
		return sub
	}
	return ci
}

// lookupBufSize bounds the names lookupFold lowers on the stack; Redis's longest command name is 20 bytes.
const lookupBufSize = 64

// lookupFold finds name in m, whose keys are lower case, ignoring ASCII case, without allocating: the name is
// lowered into a stack buffer, and the map index with string(buf) does not copy. Longer names, which no Redis
// command has, are compared with every key of the same length.
func lookupFold(m map[string]*Info, name []byte) *Info {
	if len(name) <= lookupBufSize {
		var buf [lookupBufSize]byte
		return m[string(resp.AppendLower(buf[:0], name))]
	}
	for k, ci := range m {
		if resp.EqualFold(name, k) {
			return ci
		}
	}
	return nil
}

// ArityOK reports whether a command line of nargs arguments (the name, and the subcommand name if any, included)
// passes Redis's arity check, with the same expression Redis uses. A nil ci (an unknown command) is never OK.
func (ci *Info) ArityOK(nargs int) bool {
	if ci == nil {
		return false
	}
	return !((ci.Arity > 0 && ci.Arity != nargs) || nargs < -ci.Arity)
}

// Keys appends the key arguments of args (the whole command line, name included) to dst and returns it. The keys
// are args's own slices, not copies: they alias the caller's buffers and are valid as long as args is. Keys does
// not allocate except to grow dst, and it never panics, whatever args or the key specs hold.
//
// Keys follows Redis 7's getKeysUsingKeySpecs (src/db.c) spec by spec and in the same order: begin_search index, or
// keyword (searched forwards from startfrom up to the argument before the last, or backwards from len(args)+startfrom
// down to index 2, ignoring ASCII case and, like C's strcasecmp, anything after a NUL byte in the argument; a keyword
// that is not found makes its spec find nothing), then find_keys range (lastkey relative to the first key, or to the
// end when negative, with limit) or keynum (the count must be an integer as Redis parses it: no '+', no leading zero). Keys found
// twice are returned twice, as Redis does. Specs flagged not_key are skipped.
//
// complete is false when the keys found may not be all of them: a spec of unknown type applies, a spec flagged
// incomplete applied (a keyword spec whose keyword is absent does not apply), or a spec does not fit args (a
// keynum count that is not a number or is larger than the arguments, a range past the end). In those cases Redis's
// GET_KEYSPEC_RETURN_PARTIAL behaviour is kept: the keys of the specs that did fit are returned. A nil ci (an unknown
// command) returns dst and false.
//
// One deliberate difference from Redis 7.0: a keynum count of 0 means no keys, complete, where getKeysUsingKeySpecs
// calls the spec invalid and Redis falls back to the command's own getkeys function, which finds no keys either
// (EVAL script 0 touches no declared keys).
func (ci *Info) Keys(args [][]byte, dst [][]byte) (keys [][]byte, complete bool) {
	var small [16]int // most commands name few keys: no allocation for them
	idx, complete := ci.KeyIndexes(args, small[:0])
	for _, i := range idx {
		dst = append(dst, args[i])
	}
	return dst, complete
}

// KeyIndexes is Keys, but appends the positions of the keys in args to dst instead of the keys themselves, so
// that a caller can replace them (snapshot keys are rewritten this way).
func (ci *Info) KeyIndexes(args [][]byte, dst []int) (idx []int, complete bool) {
	return ci.keyIndexes(args, dst, false)
}

// RoutingKey returns the first key Keys would return for args, which Redis Cluster routes the command by, or nil
// when Keys finds none. It aliases args and does not allocate.
func (ci *Info) RoutingKey(args [][]byte) []byte {
	var one [1]int
	if idx, _ := ci.keyIndexes(args, one[:0], true); len(idx) > 0 {
		return args[idx[0]]
	}
	return nil
}

// keyIndexes is KeyIndexes; with firstOnly, it returns as soon as it has found one key.
func (ci *Info) keyIndexes(args [][]byte, dst []int, firstOnly bool) (idx []int, complete bool) {
	if ci == nil {
		return dst, false
	}
	complete = true
	argc := len(args)
	for s := range ci.KeySpecs {
		spec := &ci.KeySpecs[s]
		if spec.Flags&KeyNotKey != 0 {
			continue
		}
		first := 0
		switch spec.BeginSearch.Type {
		case BeginIndex:
			first = spec.BeginSearch.Index
		case BeginKeyword:
			first = keywordSearch(args, spec.BeginSearch.Keyword, spec.BeginSearch.StartFrom)
			if first == 0 {
				continue // the keyword is absent: the spec does not apply
			}
		default:
			complete = false
			continue
		}
		if first < 1 || first > argc {
			complete = false // before the first argument (a hand-built spec Parse refuses) or past the end
			continue
		}
		var last, step int
		switch spec.FindKeys.Type {
		case FindRange:
			fk := &spec.FindKeys
			step = fk.KeyStep
			switch {
			case fk.LastKey >= 0:
				last = first + fk.LastKey
			case fk.Limit <= 0:
				last = argc + fk.LastKey
			default:
				// Redis asserts lastkey == -1 here; Parse refuses anything else.
				last = first + ((argc-first)/fk.Limit + fk.LastKey)
			}
		case FindKeynum:
			fk := &spec.FindKeys
			step = fk.KeyStep
			idx := first + fk.KeyNumIdx
			if fk.KeyNumIdx < 0 || idx < 1 || idx >= argc {
				complete = false
				continue
			}
			n, ok := resp.ParseInt(args[idx])
			if !ok || n < 0 || n >= int64(argc) {
				complete = false
				continue
			}
			first += fk.FirstKey
			if n == 0 {
				continue // see the doc comment: no keys, and nothing unknown
			}
			last = first + int(n) - 1
		default:
			complete = false
			continue
		}
		if step < 1 || first < 1 || last >= argc || last < first || first >= argc {
			complete = false
			continue
		}
		for i := first; i <= last && i >= first; i += step {
			dst = append(dst, i)
			if firstOnly {
				return dst, false
			}
		}
		if spec.Flags&KeyIncomplete != 0 {
			complete = false
		}
	}
	return dst, complete
}

// keyWriteFlags are the key spec flags that say a command may change the keys the spec finds.
const keyWriteFlags = KeyRW | KeyOW | KeyRM | KeyInsert | KeyDelete | KeyUpdate

// MayWrite reports whether the command may change keys: it has the write flag, or one of its key specs says it
// modifies, overwrites, deletes, inserts into or updates its keys. The write flag alone misses commands Redis
// flags readonly that still change a value: PFCOUNT rewrites the cached cardinality in the HyperLogLog's header
// (its key spec is RW), and a copy of the old bytes must not outlive it. A nil ci (an unknown command) is false.
func (ci *Info) MayWrite() bool {
	if ci == nil {
		return false
	}
	if ci.Flags&FlagWrite != 0 {
		return true
	}
	for i := range ci.KeySpecs {
		if ci.KeySpecs[i].Flags&keyWriteFlags != 0 {
			return true
		}
	}
	return false
}

// keywordSearch returns the index after keyword in args, or 0 if it is not found, searching as Redis 7's
// getKeysUsingKeySpecs does, boundaries included: forwards from startFrom to argc-2, or backwards from
// argc+startFrom to 2.
func keywordSearch(args [][]byte, keyword string, startFrom int) int {
	argc := len(args)
	start, end := argc+startFrom, 1
	if startFrom > 0 {
		start, end = startFrom, argc-1
	}
	step := 1
	if start > end {
		step = -1
	}
	for i := start; i != end; i += step {
		if i >= argc || i < 1 {
			break
		}
		arg := args[i]
		if z := bytes.IndexByte(arg, 0); z >= 0 {
			arg = arg[:z] // strcasecmp stops at the first NUL
		}
		if resp.EqualFold(arg, keyword) {
			return i + 1
		}
	}
	return 0
}
