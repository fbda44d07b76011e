// Package resp is the one place featcache reads and writes the Redis protocol (RESP2, and RESP3 for clients that
// choose it with HELLO 3). The rest of featcache frames nothing itself: requests, replies and the commands featcache
// sends upstream all go through this package.
// (Text carried inside a frame, such as INFO's CRLF-ended lines, is the caller's.)
//
// It holds:
//
//   - Reader (reader.go): the bounded, zero-copy request reader every client byte meets first, with Limits checked on
//     each header before anything is allocated for what it declares (multibulk.go), inline commands parsed as Redis
//     parses them (inline.go), and Redis's own protocol error texts (ProtocolError). ParseCommand (multibulk.go)
//     reads one whole multi-bulk command from bytes already in hand.
//   - Encoders (append.go): AppendBulk, AppendArray, AppendInt, AppendError, AppendNullBulk ... for replies, and
//     AppendCommand and AppendArgs for commands. They are redcon's (github.com/tidwall/redcon) where redcon has
//     them; the rest are written the same way. RESP3's (resp3.go): AppendNull, AppendMap, AppendSet, AppendDouble,
//     AppendVerbatim, AppendPush ..., and the ...For encoders that write a reply in the protocol a client chose.
//   - Reply frames (scan.go): Scanner, which finds where RESP2 and RESP3 frames end in a stream without copying them
//     (an attribute with the value it annotates as one frame), IsPush for RESP3's out-of-band frames, ReadFrame for
//     a client that reads one reply at a time, and readers of a frame's parts (BulkPayload, IntegerValue,
//     ArrayHeader, ArrayElements, ParseBulkArray).
//   - Value and Decode (value.go): a decoded value tree, for replies read once (COMMAND at start, CONFIG GET).
//   - ParseInt, AppendLower and EqualFold (ascii.go): integers and case folding exactly as Redis does them.
//   - Error (error.go): an error reply of Redis, kept as Redis worded it.
//
// Why featcache parses requests itself rather than with redcon: redcon enforces no limits. Its server's reader
// walks every declared argument on each read, so a declared count of "*2147483647" makes it spin for seconds, and
// it grows its read buffer for whatever a header such as "$2000000000" declares, without bound, so one client can
// make the server allocate gigabytes; ReadNextCommand, its zero-copy parser, checks no count or length either. Reader
// checks every count and length against Limits when the header arrives, and copies no argument.
//
// Byte slices: Reader's Commands point into its read buffer and are valid until the next ReadBatch; the frame
// readers return slices of the frame they are given; the encoders copy their arguments into dst and keep nothing;
// Decode copies what it returns. No function retains a slice passed to it.
//
// Concurrency: the functions are safe for concurrent use. A Reader or a Scanner belongs to one goroutine (one
// connection) at a time.
package resp
