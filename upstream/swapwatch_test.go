package upstream

import (
	"strings"
	"testing"
)

// commandstats is an INFO commandstats reply as Redis 7.0 writes it, with the given lines.
func commandstats(lines ...string) string {
	return "# Commandstats\r\n" + strings.Join(lines, "\r\n") + "\r\n"
}

// TestSwapWatchResets: CONFIG RESETSTAT zeroes the counts swapWatch compares; a reset followed by a SWAPDB can
// leave the SWAPDB count, the resetstat line (calls=1 and the same usec) and INFO's count (other clients' INFO
// calls) as they were, and only the mark's count shows it.
func TestSwapWatchResets(t *testing.T) {
	const (
		swap1  = "cmdstat_swapdb:calls=1,usec=2,usec_per_call=2.00,rejected_calls=0,failed_calls=0"
		reset1 = "cmdstat_config|resetstat:calls=1,usec=7,usec_per_call=7.00,rejected_calls=0,failed_calls=0"
	)
	info := func(calls string) string {
		return "cmdstat_info:calls=" + calls + ",usec=90,usec_per_call=30.00,rejected_calls=0,failed_calls=0"
	}
	mark := func(calls string) string {
		return "cmdstat_client|getname:calls=" + calls + ",usec=3,usec_per_call=1.00,rejected_calls=0,failed_calls=0"
	}
	cases := []struct {
		name          string
		prev, cur     string
		prevOK, curOK bool
		want          bool
	}{
		{"nothing ran", commandstats(swap1, reset1, info("3"), mark("4")), commandstats(swap1, reset1, info("4"), mark("5")), true, true, false},
		{"other clients ran the mark", commandstats(swap1, info("3"), mark("4")), commandstats(swap1, info("9"), mark("8")), true, true, false},
		{"a SWAPDB", commandstats(swap1, info("3"), mark("4")), commandstats("cmdstat_swapdb:calls=2,usec=4", info("4"), mark("5")), true, true, true},
		{"a reset and a SWAPDB that read the same", commandstats(swap1, reset1, info("3"), mark("4")), commandstats(swap1, reset1, info("5"), mark("1")), true, true, true},
		{"the mark refused", commandstats(swap1, reset1, info("3")), commandstats(swap1, reset1, info("5")), false, false, false},
		{"the mark refused once", commandstats(swap1, info("3"), mark("4")), commandstats(swap1, info("4"), mark("4")), true, false, false},
		{"INFO's count down", commandstats(swap1, info("30")), commandstats(swap1, info("5")), false, false, true},
		{"the resetstat line changed", commandstats(swap1, reset1, info("3")), commandstats(swap1, strings.Replace(reset1, "usec=7", "usec=8", 1), info("5")), false, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var w swapWatch
			if w.moved("r1", tc.prev, tc.prevOK) {
				t.Fatal("the first reading moved")
			}
			if got := w.moved("r1", tc.cur, tc.curOK); got != tc.want {
				t.Errorf("moved = %v; want %v", got, tc.want)
			}
			// Another server's reading is never compared with this one's.
			if w.moved("r2", tc.prev, tc.prevOK) {
				t.Error("a reading of another run_id moved")
			}
		})
	}
}
