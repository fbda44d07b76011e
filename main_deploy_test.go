package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"featcache/config"
	"featcache/internal/redistest"
	"featcache/internal/testkit"
)

// The files in deploy/, checked as far as this machine can without a container engine or a cluster: every
// manifest parses, every featcache configuration in them passes featcache's own validation, the deployment rules
// the manifests promise hold (probes, security context, memory arithmetic, secrets from files, hot-key lists), and
// every metric the Grafana dashboard and the alert rules query is one a running featcache exports.

// TestDeployManifests parses every YAML document under deploy/kubernetes/ and checks each featcache container
// against its configuration.
func TestDeployManifests(t *testing.T) {
	dirs, err := filepath.Glob("deploy/kubernetes/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no deploy/kubernetes/* folders (%v)", err)
	}
	zsets := map[string]string{} // warm.hotkeys_zset -> the ConfigMap that names it
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			objs := loadManifests(t, dir)
			configs := map[string]*config.Config{} // ConfigMap name -> its featcache configuration
			for _, o := range objs {
				if o.Kind != "ConfigMap" {
					continue
				}
				var cm struct{ Data map[string]string }
				o.decode(t, &cm)
				text, ok := cm.Data["config.yaml"]
				if !ok {
					continue
				}
				cfg, err := config.Parse([]byte(text))
				if err != nil {
					t.Errorf("%s: ConfigMap %s: config.yaml: %v", o.file, o.Name, err)
					continue
				}
				if cfg.Password != "" || cfg.Upstream.Password != "" || cfg.Upstream.Sentinel.Password != "" {
					t.Errorf("%s: ConfigMap %s holds a password: use password_file and upstream.password_file with a Secret", o.file, o.Name)
				}
				if z := cfg.Warm.HotkeysZset; z != "" {
					if other, dup := zsets[z]; dup {
						t.Errorf("%s: ConfigMap %s: warm.hotkeys_zset %q is also %s's: instances of other traffic would overwrite each other's list", o.file, o.Name, z, other)
					}
					zsets[z] = dir + "/" + o.Name
				}
				configs[o.Name] = cfg
			}
			if len(configs) == 0 {
				t.Fatalf("%s: no ConfigMap with a featcache config.yaml", dir)
			}
			deployments := 0
			for _, o := range objs {
				if o.Kind != "Deployment" {
					continue
				}
				deployments++
				var d deployment
				o.decode(t, &d)
				checkFeatcachePod(t, o, d, configs)
			}
			if deployments == 0 {
				t.Errorf("%s: no Deployment", dir)
			}
		})
	}

	// The shared Deployment: a Service under the store's name that reaches featcache's RESP port, and a
	// PodDisruptionBudget over its pods.
	objs := loadManifests(t, "deploy/kubernetes/shared")
	var dep deployment
	var svc service
	var pdb disruptionBudget
	for _, o := range objs {
		switch o.Kind {
		case "Deployment":
			o.decode(t, &dep)
		case "Service":
			o.decode(t, &svc)
			if o.Name != "feature-store" {
				t.Errorf("Service %s: want the name the model servers used for Redis, feature-store", o.Name)
			}
		case "PodDisruptionBudget":
			o.decode(t, &pdb)
		}
	}
	labels := dep.Spec.Template.Metadata.Labels
	if len(svc.Spec.Selector) == 0 || !selects(svc.Spec.Selector, labels) {
		t.Errorf("the Service's selector %v does not select the Deployment's pods %v", svc.Spec.Selector, labels)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 6379 || svc.Spec.Ports[0].TargetPort != "redis" {
		t.Errorf("the Service's ports %+v; want 6379 to the container port named redis", svc.Spec.Ports)
	}
	if len(pdb.Spec.Selector.MatchLabels) == 0 || !selects(pdb.Spec.Selector.MatchLabels, labels) {
		t.Errorf("the PodDisruptionBudget's selector %v does not select the Deployment's pods %v", pdb.Spec.Selector.MatchLabels, labels)
	}
	if dep.Spec.Replicas < 2 {
		t.Errorf("the shared Deployment runs %d replicas; a shared dependency wants at least 2", dep.Spec.Replicas)
	}
}

// checkFeatcachePod checks the featcache container of a Deployment's pod (a container or a native sidecar)
// against the configuration it mounts.
func checkFeatcachePod(t *testing.T, o manifest, d deployment, configs map[string]*config.Config) {
	t.Helper()
	pod := d.Spec.Template.Spec
	var fc *container
	sidecar := false
	for i, c := range pod.InitContainers {
		if strings.Contains(c.Image, "featcache") {
			fc, sidecar = &pod.InitContainers[i], true
			if c.RestartPolicy != "Always" {
				t.Errorf("%s: init container %s: want restartPolicy Always (a native sidecar)", o.file, c.Name)
			}
		}
	}
	for i, c := range pod.Containers {
		if strings.Contains(c.Image, "featcache") {
			fc = &pod.Containers[i]
		}
	}
	if fc == nil {
		t.Errorf("%s: Deployment %s runs no featcache container", o.file, o.Name)
		return
	}
	where := fmt.Sprintf("%s: Deployment %s, container %s", o.file, o.Name, fc.Name)

	// Its configuration: the ConfigMap mounted at /etc/featcache, where the image's entrypoint reads it.
	volumes := map[string]volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	mounts := map[string]volume{} // mount path -> volume
	for _, m := range fc.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok {
			t.Errorf("%s: mounts volume %s, which the pod does not define", where, m.Name)
		}
		mounts[m.MountPath] = v
	}
	cmVol, ok := mounts["/etc/featcache"]
	if !ok || cmVol.ConfigMap == nil {
		t.Errorf("%s: no ConfigMap mounted at /etc/featcache", where)
		return
	}
	cfg := configs[cmVol.ConfigMap.Name]
	if cfg == nil {
		t.Errorf("%s: mounts ConfigMap %s, which is not among the manifests", where, cmVol.ConfigMap.Name)
		return
	}

	// Password files and the hot-key file live on volumes: a Secret for the first, a writable volume (the root
	// file system is read-only) for the second.
	under := func(path string) (volume, bool) {
		for mp, v := range mounts {
			if strings.HasPrefix(path, strings.TrimSuffix(mp, "/")+"/") {
				return v, true
			}
		}
		return volume{}, false
	}
	for field, path := range map[string]string{"password_file": cfg.PasswordFile, "upstream.password_file": cfg.Upstream.PasswordFile} {
		if path == "" {
			continue
		}
		if v, ok := under(path); !ok || v.Secret == nil {
			t.Errorf("%s: %s %s is not on a mounted Secret", where, field, path)
		}
	}
	if path := cfg.Warm.HotkeysFile; path != "" {
		if v, ok := under(path); !ok || v.EmptyDir == nil {
			t.Errorf("%s: warm.hotkeys_file %s is not on a mounted emptyDir (the root file system is read-only)", where, path)
		}
	}

	// Probes: liveness on /healthz; readiness, where there is one, on /readyz and warmed, surviving one slow reply;
	// a sidecar's start and readiness never wait for Redis (/readyz does).
	if p := fc.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
		t.Errorf("%s: want a livenessProbe on /healthz", where)
	}
	for name, p := range map[string]*probe{"readinessProbe": fc.ReadinessProbe, "livenessProbe": fc.LivenessProbe, "startupProbe": fc.StartupProbe} {
		if p == nil {
			continue
		}
		if p.TimeoutSeconds < 2 {
			t.Errorf("%s: %s timeoutSeconds %d; want at least 2", where, name, p.TimeoutSeconds)
		}
		if name != "startupProbe" && p.FailureThreshold < 3 {
			t.Errorf("%s: %s failureThreshold %d; want at least 3, so one slow reply does not count", where, name, p.FailureThreshold)
		}
		if sidecar && name != "livenessProbe" && p.HTTPGet != nil && p.HTTPGet.Path == "/readyz" {
			t.Errorf("%s: the sidecar's %s is on /readyz, which waits for Redis: a Redis outage at pod start would keep the model server down", where, name)
		}
	}
	if !sidecar {
		p := fc.ReadinessProbe
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
			t.Errorf("%s: want a readinessProbe on /readyz", where)
		} else if cfg.Warm.ReadyAfter == 0 {
			t.Errorf("%s: readiness on /readyz is meant to mean warmed, but warm.ready_after is 0", where)
		}
	}

	// Shutdown: featcache's delay and timeout fit in the grace period.
	if g := pod.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= cfg.ShutdownDelay+cfg.ShutdownTimeout {
		t.Errorf("%s: terminationGracePeriodSeconds %v; want more than shutdown_delay + shutdown_timeout (%v)", where,
			pod.TerminationGracePeriodSeconds, cfg.ShutdownDelay+cfg.ShutdownTimeout)
	}

	// The security context, the container's over the pod's.
	sc := pod.SecurityContext.over(fc.SecurityContext)
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Errorf("%s: want runAsNonRoot: true and a non-zero runAsUser", where)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: want readOnlyRootFilesystem: true", where)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: want allowPrivilegeEscalation: false", where)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("%s: want capabilities: {drop: [ALL]}", where)
	}

	// Memory: featcache's own bound, local.max_memory + the Go memory limit's headroom + max_clients_memory +
	// max_clients x 150 KiB of baselines, with a margin; the request equals the limit.
	bound := cfg.Local.MaxMemory + memoryHeadroom + cfg.Limits.MaxClientsMemory + int64(cfg.Limits.MaxClients)*150<<10
	limit, err := quantity(fc.Resources.Limits["memory"])
	if err != nil {
		t.Errorf("%s: resources.limits.memory: %v", where, err)
	} else if float64(limit) < 1.05*float64(bound) {
		t.Errorf("%s: memory limit %s (%d MiB); featcache's bound is %d MiB: want at least 5%% above it", where,
			fc.Resources.Limits["memory"], limit>>20, bound>>20)
	}
	if req := fc.Resources.Requests["memory"]; req != fc.Resources.Limits["memory"] {
		t.Errorf("%s: memory request %q; want it equal to the limit %q", where, req, fc.Resources.Limits["memory"])
	}
	if cpu, ok := fc.Resources.Limits["cpu"]; ok {
		t.Errorf("%s: CPU limit %s; want none (throttling shows up as tail latency)", where, cpu)
	}
}

// TestDeployConfigsStartWithoutRedis runs featcache with each ConfigMap's configuration (its password file and
// hot-key file moved to test folders, text logs) while its Redis is down: /healthz, the sidecar's startup and
// liveness probe, answers at once, /readyz waits for Redis, and once Redis is back /readyz turns 200 and reads and
// writes go through with the password read from the file.
func TestDeployConfigsStartWithoutRedis(t *testing.T) {
	const secret = "deploy-secret-7d3e"
	for _, dir := range []string{"deploy/kubernetes/shared", "deploy/kubernetes/sidecar"} {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			var text string
			for _, o := range loadManifests(t, dir) {
				var cm struct{ Data map[string]string }
				if o.Kind == "ConfigMap" {
					o.decode(t, &cm)
					text = cm.Data["config.yaml"]
				}
			}
			secrets, state := t.TempDir(), t.TempDir()
			if err := os.WriteFile(filepath.Join(secrets, "upstream-password"), []byte(secret+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			text = strings.NewReplacer("/var/run/secrets/featcache/", secrets+"/", "/var/lib/featcache/", state+"/",
				"format: json", "format: text").Replace(text)
			redis := redistest.Start(t, "--requirepass", secret)
			redis.Kill()

			admin := "http://127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
			in := startInProcess(t, "-config", writeConfig(t, text), "-listen", "127.0.0.1:0",
				"-admin", strings.TrimPrefix(admin, "http://"), "-upstream", redis.Addr())
			if got := httpStatus(admin + "/healthz"); got != http.StatusOK {
				t.Fatalf("/healthz with Redis down = %d; want 200 (the probes that must not wait for Redis)", got)
			}
			if got := httpStatus(admin + "/readyz"); got != http.StatusServiceUnavailable {
				t.Fatalf("/readyz with Redis down = %d; want 503", got)
			}
			redis.Restart()
			redistest.Eventually(t, 30*time.Second, "ready once Redis is back", func() bool {
				return httpStatus(admin+"/readyz") == http.StatusOK
			})
			c := redistest.Dial(t, in.listen)
			if got := string(c.Do("SET", "profile:1", "v")); got != "+OK\r\n" {
				t.Fatalf("SET through featcache = %q", got)
			}
			if got := string(c.Do("GET", "profile:1")); got != "$1\r\nv\r\n" {
				t.Fatalf("GET through featcache = %q", got)
			}
		})
	}
}

// TestDockerfile checks what the image promises, since no container engine runs here: a multi-stage build of a
// static, trimmed binary, a non-root numeric user, the two ports and the entrypoint the manifests rely on.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("deploy/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var from []string
	var user, entrypoint string
	var expose []string
	var build bool
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		word, rest, _ := strings.Cut(line, " ")
		switch strings.ToUpper(word) {
		case "FROM":
			from = append(from, rest)
		case "USER":
			user = rest
		case "EXPOSE":
			expose = append(expose, strings.Fields(rest)...)
		case "ENTRYPOINT":
			entrypoint = rest
		case "RUN":
			if strings.Contains(line, "CGO_ENABLED=0") && strings.Contains(line, "-trimpath") && strings.Contains(line, "go build") {
				build = true
			}
		}
	}
	if len(from) < 2 || !strings.HasPrefix(from[0], "golang:") || !strings.Contains(from[len(from)-1], "distroless/static") {
		t.Errorf("FROM lines %q; want a golang build stage and a distroless/static final stage", from)
	}
	if !build {
		t.Errorf("no RUN with CGO_ENABLED=0 go build -trimpath")
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "0" || u == "root" || strings.Trim(u, "0123456789") != "" {
		t.Errorf("USER %q; want a numeric non-root user (runAsNonRoot verifies numbers only)", user)
	}
	if !slices.Contains(expose, "6380") || !slices.Contains(expose, "9121") {
		t.Errorf("EXPOSE %q; want 6380 and 9121", expose)
	}
	var ep []string
	if err := json.Unmarshal([]byte(entrypoint), &ep); err != nil || len(ep) != 3 || filepath.Base(ep[0]) != "featcache" ||
		ep[1] != "-config" || ep[2] != "/etc/featcache/config.yaml" {
		t.Errorf("ENTRYPOINT %s; want [\".../featcache\", \"-config\", \"/etc/featcache/config.yaml\"] (%v)", entrypoint, err)
	}
}

// TestDashboardAndAlertMetrics: every PromQL expression of the Grafana dashboard and of the alert rules names only
// metrics that a running featcache exports (scraped from its /metrics now, so metrics added later count).
func TestDashboardAndAlertMetrics(t *testing.T) {
	exported := exportedMetrics(t)

	type query struct{ where, expr string }
	var queries []query

	data, err := os.ReadFile("deploy/grafana/featcache.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Type    string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Name, Type string
				Query      any
			}
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("deploy/grafana/featcache.json: %v", err)
	}
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			queries = append(queries, query{"dashboard panel " + strconv.Quote(p.Title), tg.Expr})
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		sub := labelValues.FindStringSubmatch(q)
		if sub == nil {
			t.Errorf("dashboard variable %s: query %q; want label_values(METRIC, LABEL)", v.Name, q)
			continue
		}
		queries = append(queries, query{"dashboard variable " + v.Name, sub[1]})
	}

	rulesData, err := os.ReadFile("deploy/prometheus/featcache-alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(rulesData))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("deploy/prometheus/featcache-alerts.yaml: %v", err)
	}
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert rule %q: want a name, a severity label, a summary and a description", r.Alert)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			alerts[r.Alert] = true
			queries = append(queries, query{"alert " + r.Alert, r.Expr})
		}
	}
	for _, want := range []string{"FeatcacheUpstreamDown", "FeatcacheTrackingDown", "FeatcacheNotReady",
		"FeatcacheStaleOnErrorHigh", "FeatcacheEvictionsHigh", "FeatcacheMemoryNearLimit"} {
		if !alerts[want] {
			t.Errorf("no alert %s", want)
		}
	}

	used := map[string]bool{}
	for _, q := range queries {
		names, err := promqlMetrics(q.expr)
		if err != nil {
			t.Errorf("%s: %q: %v", q.where, q.expr, err)
			continue
		}
		for _, n := range names {
			used[n] = true
			if !exported.has(n) {
				t.Errorf("%s: %q queries %s, which featcache does not export", q.where, q.expr, n)
			}
		}
	}
	t.Logf("%d queries name %d metrics; featcache exports %d", len(queries), len(used), len(exported))
}

// metricTypes maps the metric families a featcache exports to their type (counter, gauge, histogram, ...).
type metricTypes map[string]string

// has reports whether a query may name n: an exported family, or a histogram's or summary's _bucket, _sum or
// _count series.
func (m metricTypes) has(n string) bool {
	if _, ok := m[n]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(n, suffix); ok {
			if typ := m[base]; typ == "histogram" || (typ == "summary" && suffix != "_bucket") {
				return true
			}
		}
	}
	return false
}

// exportedMetrics runs featcache in front of a real Redis, sends it a few reads so that every per-policy series
// exists, and returns the metric families its /metrics lists.
func exportedMetrics(t *testing.T) metricTypes {
	t.Helper()
	redis := redistest.Start(t)
	redis.Do("SET", "p:1", "v")
	admin := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	in := startInProcess(t, "-config", writeConfig(t, "shutdown_delay: 0s\npolicies:\n  - {name: p, prefix: \"p:\", hard_ttl: 1h}\n"),
		"-listen", "127.0.0.1:0", "-admin", admin, "-upstream", redis.Addr())
	c := redistest.Dial(t, in.listen)
	c.Do("GET", "p:1")
	c.Do("GET", "p:1")
	c.Do("GET", "other")
	_, body := testkit.Get(t, "http://"+admin+"/metrics")
	types := metricTypes{}
	for _, line := range strings.Split(string(body), "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = f[3]
		}
	}
	if types["featcache_requests_total"] != "counter" || types["featcache_upstream_duration_seconds"] != "histogram" {
		t.Fatalf("/metrics lacks featcache's own metrics:\n%s", body)
	}
	return types
}

// promqlMetrics returns the metric names a PromQL expression selects: identifiers outside label matchers, range
// brackets and strings that are not function or aggregation names, keywords, or the label lists of by, without,
// on, ignoring, group_left and group_right. It is a scanner, not a parser: it rejects unbalanced brackets and
// quotes and an expression that selects nothing.
func promqlMetrics(expr string) ([]string, error) {
	// Strings and the insides of {...} and [...] hold label values, matchers and durations, never metric names.
	var b strings.Builder
	var stack []byte
	for i := 0; i < len(expr); i++ {
		ch := expr[i]
		switch {
		case ch == '"' || ch == '\'' || ch == '`':
			j := i + 1
			for ; j < len(expr) && expr[j] != ch; j++ {
				if expr[j] == '\\' && ch != '`' {
					j++
				}
			}
			if j >= len(expr) {
				return nil, errors.New("unterminated string")
			}
			i = j
			b.WriteByte(' ')
		case ch == '{' || ch == '[':
			stack = append(stack, ch)
		case ch == '}' || ch == ']':
			open := byte('{')
			if ch == ']' {
				open = '['
			}
			if len(stack) == 0 || stack[len(stack)-1] != open {
				return nil, fmt.Errorf("unbalanced %q", ch)
			}
			stack = stack[:len(stack)-1]
			b.WriteByte(' ')
		case len(stack) > 0:
		default:
			b.WriteByte(ch)
		}
	}
	if len(stack) > 0 {
		return nil, fmt.Errorf("unclosed %q", stack[len(stack)-1])
	}
	s := b.String()
	if strings.Count(s, "(") != strings.Count(s, ")") {
		return nil, errors.New("unbalanced parentheses")
	}

	labelLists := []string{"by", "without", "on", "ignoring", "group_left", "group_right"}
	keywords := []string{"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
	var names []string
	for i := 0; i < len(s); {
		ch := s[i]
		switch {
		case isIdentStart(ch):
			j := i
			for j < len(s) && (isIdentStart(s[j]) || s[j] >= '0' && s[j] <= '9') {
				j++
			}
			word := s[i:j]
			k := j
			for k < len(s) && (s[k] == ' ' || s[k] == '\t' || s[k] == '\n') {
				k++
			}
			switch lower := strings.ToLower(word); {
			case slices.Contains(labelLists, lower):
				if k < len(s) && s[k] == '(' {
					end := strings.IndexByte(s[k:], ')')
					j = k + end + 1
				}
			case lower == "offset":
				// offset's duration: skip the next token
				for j = k; j < len(s) && s[j] != ' ' && s[j] != ')'; j++ {
				}
			case slices.Contains(keywords, lower):
			case k < len(s) && s[k] == '(':
				// a function or an aggregation
			case startsWord(s[k:], "by") || startsWord(s[k:], "without"):
				// an aggregation with its grouping first: sum by (policy) (...)
			default:
				names = append(names, word)
			}
			i = j
		case ch >= '0' && ch <= '9' || ch == '.':
			// a number (1.2, 1e3, 0x1f)
			for i < len(s) && (isIdentStart(s[i]) || s[i] >= '0' && s[i] <= '9' || s[i] == '.' || s[i] == '+' && (s[i-1] == 'e' || s[i-1] == 'E')) {
				i++
			}
		case ch == '$':
			return nil, fmt.Errorf("a variable outside a label matcher or a range: %q", s[i:])
		default:
			i++
		}
	}
	if len(names) == 0 {
		return nil, errors.New("selects no metric")
	}
	return names, nil
}

// startsWord reports whether s starts with the word w, followed by a space or a parenthesis.
func startsWord(s, w string) bool {
	return strings.HasPrefix(s, w) && len(s) > len(w) && strings.IndexByte(" \t\n(", s[len(w)]) >= 0
}

func isIdentStart(ch byte) bool {
	return ch == '_' || ch == ':' || ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z'
}

// TestPromqlMetrics checks the scanner on the shapes the dashboard and the rules use.
func TestPromqlMetrics(t *testing.T) {
	tests := []struct {
		expr string
		want []string
		err  bool
	}{
		{expr: `featcache_upstream_up == 0`, want: []string{"featcache_upstream_up"}},
		{expr: `absent(featcache_ready)`, want: []string{"featcache_ready"}},
		{expr: `sum by (policy) (rate(featcache_requests_total{instance=~"$instance", result=~"hit|stale"}[$__rate_interval]))`,
			want: []string{"featcache_requests_total"}},
		{expr: `histogram_quantile(0.99, sum by (le, class) (rate(featcache_upstream_duration_seconds_bucket{class="read"}[5m])))`,
			want: []string{"featcache_upstream_duration_seconds_bucket"}},
		{expr: `featcache_tracking_up == 0 and on (instance) featcache_upstream_up == 1`,
			want: []string{"featcache_tracking_up", "featcache_upstream_up"}},
		{expr: `a / on (instance) group_left (policy) b offset 5m`, want: []string{"a", "b"}},
		{expr: "process_resident_memory_bytes > 1.2 * go_gc_gomemlimit_bytes", want: []string{"process_resident_memory_bytes", "go_gc_gomemlimit_bytes"}},
		{expr: `sum without (result) (x{a="}{[("})`, want: []string{"x"}},
		{expr: `increase(featcache_panics_total[10m]) > 1e3`, want: []string{"featcache_panics_total"}},
		{expr: `{__name__="x"}`, err: true},
		{expr: `sum(rate(x[5m])`, err: true},
		{expr: `x{a="b"`, err: true},
		{expr: `x{a="b}`, err: true},
		{expr: `rate(x[$__rate_interval]) * $factor`, err: true},
	}
	for _, tc := range tests {
		got, err := promqlMetrics(tc.expr)
		if tc.err {
			if err == nil {
				t.Errorf("promqlMetrics(%q) = %q; want an error", tc.expr, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("promqlMetrics(%q) = %q, %v; want %q", tc.expr, got, err, tc.want)
		}
	}
}

// manifest is one YAML document of a manifest file.
type manifest struct {
	file       string
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Name       string
	node       *yaml.Node
}

// decode decodes the document into v.
func (m manifest) decode(t *testing.T, v any) {
	t.Helper()
	if err := m.node.Decode(v); err != nil {
		t.Fatalf("%s: %s %s: %v", m.file, m.Kind, m.Name, err)
	}
}

// loadManifests parses every YAML document of dir's files. Every document names its apiVersion, kind and
// metadata.name; a kustomization.yaml lists exactly the other files, so that `kubectl apply -k` applies them all.
func loadManifests(t *testing.T, dir string) []manifest {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("%s: no YAML files (%v)", dir, err)
	}
	var out []manifest
	var listed []string
	var others []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(f) == "kustomization.yaml" {
			var k struct {
				APIVersion string   `yaml:"apiVersion"`
				Kind       string   `yaml:"kind"`
				Resources  []string `yaml:"resources"`
			}
			dec := yaml.NewDecoder(bytes.NewReader(data))
			dec.KnownFields(true)
			if err := dec.Decode(&k); err != nil || k.Kind != "Kustomization" {
				t.Fatalf("%s: %v (kind %q)", f, err, k.Kind)
			}
			listed = k.Resources
			continue
		}
		others = append(others, filepath.Base(f))
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for n := 0; ; n++ {
			var doc yaml.Node
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				if n == 0 {
					t.Errorf("%s: no YAML document", f)
				}
				break
			} else if err != nil {
				t.Fatalf("%s: document %d: %v", f, n+1, err)
			}
			var head struct {
				APIVersion string `yaml:"apiVersion"`
				Kind       string `yaml:"kind"`
				Metadata   struct {
					Name string `yaml:"name"`
				} `yaml:"metadata"`
			}
			if err := doc.Decode(&head); err != nil {
				t.Fatalf("%s: document %d: %v", f, n+1, err)
			}
			if head.APIVersion == "" || head.Kind == "" || head.Metadata.Name == "" {
				t.Errorf("%s: document %d lacks apiVersion, kind or metadata.name", f, n+1)
			}
			out = append(out, manifest{file: f, APIVersion: head.APIVersion, Kind: head.Kind, Name: head.Metadata.Name, node: &doc})
		}
	}
	slices.Sort(listed)
	if !slices.Equal(listed, others) {
		t.Errorf("%s/kustomization.yaml lists %q; the folder holds %q", dir, listed, others)
	}
	return out
}

// quantity parses a Kubernetes memory quantity (1800Mi, 1Gi, 512M, 1000000).
func quantity(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}}
	mult := 1.0
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = num, u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 || math.IsInf(f, 0) {
		return 0, fmt.Errorf("invalid quantity %q", s)
	}
	return int64(f * mult), nil
}

// selects reports whether every label of selector is in labels.
func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// The parts of the Kubernetes objects the checks read.
type (
	deployment struct {
		Spec struct {
			Replicas int `yaml:"replicas"`
			Template struct {
				Metadata struct {
					Labels map[string]string `yaml:"labels"`
				} `yaml:"metadata"`
				Spec podSpec `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	podSpec struct {
		TerminationGracePeriodSeconds *int64          `yaml:"terminationGracePeriodSeconds"`
		SecurityContext               securityContext `yaml:"securityContext"`
		InitContainers                []container     `yaml:"initContainers"`
		Containers                    []container     `yaml:"containers"`
		Volumes                       []volume        `yaml:"volumes"`
	}
	container struct {
		Name           string `yaml:"name"`
		Image          string `yaml:"image"`
		RestartPolicy  string `yaml:"restartPolicy"`
		ReadinessProbe *probe `yaml:"readinessProbe"`
		LivenessProbe  *probe `yaml:"livenessProbe"`
		StartupProbe   *probe `yaml:"startupProbe"`
		Resources      struct {
			Requests map[string]string `yaml:"requests"`
			Limits   map[string]string `yaml:"limits"`
		} `yaml:"resources"`
		SecurityContext securityContext `yaml:"securityContext"`
		VolumeMounts    []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
	}
	probe struct {
		HTTPGet *struct {
			Path string `yaml:"path"`
		} `yaml:"httpGet"`
		TimeoutSeconds   int `yaml:"timeoutSeconds"`
		FailureThreshold int `yaml:"failureThreshold"`
	}
	securityContext struct {
		RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
		RunAsUser                *int64 `yaml:"runAsUser"`
		ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
		Capabilities             *struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	}
	volume struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
		EmptyDir *struct{} `yaml:"emptyDir"`
	}
	service struct {
		Spec struct {
			Selector map[string]string `yaml:"selector"`
			Ports    []struct {
				Port       int    `yaml:"port"`
				TargetPort string `yaml:"targetPort"`
			} `yaml:"ports"`
		} `yaml:"spec"`
	}
	disruptionBudget struct {
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
		} `yaml:"spec"`
	}
)

// over returns the security context a container runs with: its own fields over the pod's (runAsNonRoot and
// runAsUser are pod-level too; the others are container-only).
func (pod securityContext) over(c securityContext) securityContext {
	if c.RunAsNonRoot == nil {
		c.RunAsNonRoot = pod.RunAsNonRoot
	}
	if c.RunAsUser == nil {
		c.RunAsUser = pod.RunAsUser
	}
	return c
}
