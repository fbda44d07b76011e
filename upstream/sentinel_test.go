package upstream

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"featcache/internal/redistest"
	"featcache/internal/resp"
)

// failoverBound is how long a test waits for a forced failover to complete and featcache to follow it: generous,
// since Sentinel's own timers run in seconds and the machine is shared.
const failoverBound = 30 * time.Second

func newSentinelClient(t *testing.T, set *redistest.SentinelSet, tracking bool, password string) (*Client, *recorder) {
	t.Helper()
	rec := &recorder{}
	c, err := New(Options{
		Sentinel: &SentinelOptions{MasterSet: set.Name, Addresses: set.SentinelAddrs(), Password: password,
			Interval: 200 * time.Millisecond},
		Tracking: tracking, Prefixes: []string{"k:"}, Cache: rec,
		Timeout: time.Second, HealthInterval: 50 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, rec
}

// TestSentinelFollowsFailover: the Client finds the primary through a sentinel, and after SENTINEL FAILOVER
// points its shared connections, new dedicated connections and tracking at the promoted replica; a dedicated
// connection in use fails with ErrRetargeted, nothing of featcache stays connected to the old primary, and the
// local tier is untrusted and flushed before it is trusted again. Without tracking (TTL-only) the tier is flushed
// all the same.
func TestSentinelFollowsFailover(t *testing.T) {
	for _, tracking := range []bool{true, false} {
		t.Run(fmt.Sprintf("tracking=%v", tracking), func(t *testing.T) { testSentinelFollowsFailover(t, tracking) })
	}
}

func testSentinelFollowsFailover(t *testing.T, tracking bool) {
	set := redistest.StartSentinelSet(t, "mymaster", 1, 1, "")
	oldPrimary, replica := set.Primary, set.Replicas[0]
	c, rec := newSentinelClient(t, set, tracking, "")
	if got := c.Addr(); got != oldPrimary.Addr() {
		t.Fatalf("Addr = %q right after New; want the primary %q (resolved at start)", got, oldPrimary.Addr())
	}
	if tracking {
		redistest.Eventually(t, 5*time.Second, "tracking established", func() bool { _, up := c.Tracking(); return up })
	}
	call := NewCall()
	if err := c.Do(call, command("SET", "k:1", "before")); err != nil || string(call.Frame(0)) != "+OK\r\n" {
		t.Fatalf("SET: %q, %v", call.Frame(0), err)
	}
	pinned, err := c.Dedicated()
	if err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	flushesBefore, trustBefore := rec.flushes, len(rec.trust)
	rec.mu.Unlock()

	set.Failover()
	redistest.Eventually(t, failoverBound, "following the promoted replica", func() bool { return c.Addr() == replica.Addr() })
	if role := redistest.Role(t, replica); role != "master" {
		t.Fatalf("the Client follows %s, whose role is %s", replica.Addr(), role)
	}

	// The dedicated connection in use went to the old primary: it is closed, and says why.
	if err := pinned.Do(call, resp.AppendCommand(nil, "PING"), 1, time.Now().Add(time.Second)); !errors.Is(err, ErrRetargeted) {
		t.Fatalf("a dedicated connection to the old primary: got %v; want ErrRetargeted", err)
	}
	pinned.Release() // dropped, not reused
	fresh, err := c.Dedicated()
	if err != nil {
		t.Fatal(err)
	}
	if fresh == pinned {
		t.Fatal("a connection closed by the failover was handed out again")
	}
	if err := fresh.Do(call, resp.AppendCommand(nil, "ROLE"), 1, time.Now().Add(time.Second)); err != nil ||
		!strings.HasPrefix(string(call.Frame(0)), "*3\r\n$6\r\nmaster\r\n") {
		t.Fatalf("ROLE on a new dedicated connection: %q, %v; want the new primary", call.Frame(0), err)
	}
	fresh.Release()

	// Shared connections write to the new primary.
	redistest.Eventually(t, 5*time.Second, "a write through the pool succeeds", func() bool {
		return c.Do(call, command("SET", "k:1", "after")) == nil && string(call.Frame(0)) == "+OK\r\n"
	})
	if got := string(replica.Do("GET", "k:1")); got != "$5\r\nafter\r\n" {
		t.Fatalf("GET k:1 on the new primary = %q; want the write made through the pool", got)
	}

	// Tracking moved too: it is up, on the new primary, and reports its writes.
	if tracking {
		redistest.Eventually(t, 5*time.Second, "tracking up on the new primary", func() bool {
			_, up := c.Tracking()
			return up && hasClient(t, replica, "featcache-tracking")
		})
		replica.Do("SET", "k:2", "x")
		redistest.Eventually(t, 5*time.Second, "invalidation from the new primary", func() bool { return rec.invalidated("k:2") })
	} else if hasClient(t, replica, "featcache-tracking") {
		t.Error("a tracking connection without tracking")
	}

	// Nothing of featcache's stays on the old primary (the sentinel's connections have other names).
	redistest.Eventually(t, 5*time.Second, "no featcache connection left on the old primary", func() bool {
		for _, n := range clientNames(t, oldPrimary) {
			if strings.HasPrefix(n, "featcache") {
				return false
			}
		}
		return true
	})

	// The tier was flushed (before and after the pool moved, and with tracking once more when it came up on
	// another run_id); with tracking it was untrusted first and trusted again last, without tracking it stayed
	// trusted (TTL-only: nothing says when to distrust it, and the flushes did the work).
	rec.mu.Lock()
	flushes, trust := rec.flushes-flushesBefore, rec.trust[trustBefore:]
	rec.mu.Unlock()
	if flushes < 2 {
		t.Errorf("local tier flushed %d times by the switch; want at least 2", flushes)
	}
	switch {
	case tracking && (len(trust) < 2 || trust[0] || !trust[len(trust)-1]):
		t.Errorf("trust changes during the switch: %v; want false first and true last", trust)
	case !tracking && len(trust) != 0:
		t.Errorf("trust changes during the switch without tracking: %v; want none", trust)
	}
}

// TestSentinelPasswordAndUnknownMasterSet: a sentinel with requirepass is reached with SentinelOptions.Password;
// a Client asking for a master set the sentinels do not know, or with a wrong password, has no primary: its
// requests fail at once with ErrNoAddress, and tracking is enabled but not up.
func TestSentinelPasswordAndUnknownMasterSet(t *testing.T) {
	set := redistest.StartSentinelSet(t, "pwset", 0, 1, "sentinel-secret")
	good, _ := newSentinelClient(t, set, true, "sentinel-secret")
	if got := good.Addr(); got != set.Primary.Addr() {
		t.Fatalf("with the sentinel password: Addr = %q; want %q", got, set.Primary.Addr())
	}

	for name, tc := range map[string]struct{ masterSet, password string }{
		"wrong password":     {"pwset", "nope"},
		"unknown master set": {"other", "sentinel-secret"},
	} {
		t.Run(name, func(t *testing.T) {
			bad := &redistest.SentinelSet{Name: tc.masterSet, Sentinels: set.Sentinels}
			c, _ := newSentinelClient(t, bad, true, tc.password)
			if got := c.Addr(); got != "" {
				t.Fatalf("Addr = %q; want none", got)
			}
			call := NewCall()
			if err := c.Do(call, command("PING")); !errors.Is(err, ErrNoAddress) {
				t.Fatalf("PING: got %v; want ErrNoAddress", err)
			}
			if enabled, up := c.Tracking(); !enabled || up {
				t.Fatalf("Tracking() = %v, %v; want enabled, not up", enabled, up)
			}
			if c.Reached() {
				t.Fatal("Reached() = true without a primary; readiness would not wait for one")
			}
		})
	}
}

// TestSentinelRoleNotPermitted: an upstream user that may not run ROLE (NOPERM) cannot confirm the primary's role;
// the sentinels' answer is taken.
func TestSentinelRoleNotPermitted(t *testing.T) {
	set := redistest.StartSentinelSet(t, "mymaster", 0, 1, "")
	if got := string(set.Primary.Do("ACL", "SETUSER", "app", "on", ">app-pass", "~*", "&*", "+@all", "-role")); got != "+OK\r\n" {
		t.Fatalf("ACL SETUSER: %q", got)
	}
	c, err := New(Options{
		Sentinel: &SentinelOptions{MasterSet: set.Name, Addresses: set.SentinelAddrs()},
		Username: "app", Password: "app-pass", Cache: &recorder{}, Timeout: time.Second,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if got := c.Addr(); got != set.Primary.Addr() {
		t.Fatalf("Addr = %q; want the primary %q although ROLE is not permitted", got, set.Primary.Addr())
	}
	call := NewCall()
	if err := c.Do(call, command("ROLE")); err != nil || !strings.HasPrefix(string(call.Frame(0)), "-NOPERM") {
		t.Fatalf("ROLE as the restricted user: %q, %v; want NOPERM", call.Frame(0), err)
	}
}

func TestParseSentinelAnswer(t *testing.T) {
	master := "*6\r\n$4\r\nname\r\n$8\r\nmymaster\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$12\r\nconfig-epoch\r\n$1\r\n7\r\n"
	tests := []struct {
		name, addr, master string
		want               string
		epoch              int64
		wantErr            string
	}{
		{"known", "*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n", master, "127.0.0.1:6380", 7, ""},
		{"ipv6", "*2\r\n$3\r\n::1\r\n$4\r\n6380\r\n", master, "[::1]:6380", 7, ""},
		{"no epoch field", "*2\r\n$1\r\nh\r\n$1\r\n1\r\n", "*0\r\n", "h:1", 0, ""},
		{"unknown master set", "*-1\r\n", "-ERR No such master with that name\r\n", "", 0, "does not know"},
		{"error", "-NOAUTH Authentication required.\r\n", master, "", 0, "NOAUTH"},
		{"bad epoch", "*2\r\n$1\r\nh\r\n$1\r\n1\r\n", "*2\r\n$12\r\nconfig-epoch\r\n$1\r\nx\r\n", "", 0, "config-epoch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr, epoch, err := parseSentinelAnswer([]byte(tc.addr), []byte(tc.master))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %q, %v; want an error containing %q", addr, err, tc.wantErr)
				}
				return
			}
			if err != nil || addr != tc.want || epoch != tc.epoch {
				t.Fatalf("got %q epoch %d, %v; want %q epoch %d", addr, epoch, err, tc.want, tc.epoch)
			}
		})
	}
}

func TestParseRole(t *testing.T) {
	tests := []struct{ frame, want, wantErr string }{
		{"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n", "master", ""},
		{"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:14\r\n", "slave", ""},
		{"-NOPERM this user has no permissions to run the 'role' command\r\n", "", "NOPERM"},
		{"+OK\r\n", "", "ROLE replied"},
		{"*1\r\n:1\r\n", "", "ROLE replied"},
	}
	for _, tc := range tests {
		got, err := parseRole([]byte(tc.frame))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseRole(%q) = %q, %v; want an error containing %q", tc.frame, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseRole(%q) = %q, %v; want %q", tc.frame, got, err, tc.want)
		}
	}
}
