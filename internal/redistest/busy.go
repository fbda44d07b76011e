package redistest

// Making Redis busy, as another application sharing it would: a script that runs for a given time, and one that runs
// until SCRIPT KILL.

// SleepScript is a Lua script that keeps Redis busy for ARGV[1] milliseconds, then returns 1: run with EVAL and
// no keys, it makes the server answer other clients -BUSY once busy-reply-threshold passes.
const SleepScript = `local t = redis.call('TIME') local start = t[1] * 1000000 + t[2]
while true do
  local n = redis.call('TIME')
  if n[1] * 1000000 + n[2] - start >= tonumber(ARGV[1]) * 1000 then break end
end
return 1`

// Loop sends EVAL of a Lua script that runs until SCRIPT KILL, without reading the reply: once
// busy-reply-threshold passes, the server answers other clients -BUSY; after SCRIPT KILL, c reads the script's
// error. A failed send fails the test.
func (c *Conn) Loop() {
	c.tb.Helper()
	if err := c.Send("EVAL", "while true do end", "0"); err != nil {
		c.tb.Fatalf("redistest: send EVAL: %v", err)
	}
}
