package examples_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"sigs.k8s.io/yaml"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/examples/internal/demoflags"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/stophook"
)

const (
	kubernetesManifest = "kubernetes/deployment.yaml"
	systemdUnit        = "systemd/drainkit-demo.service"

	// minMargin is what a deployment must allow beyond the drain's budget:
	// for the signal to reach the server, the store to open before it, the
	// process to exit after it, and the kubelet or systemd to keep time.
	minMargin = 5 * time.Second

	// kubernetesDefaultGrace is terminationGracePeriodSeconds when unset.
	kubernetesDefaultGrace = 30 * time.Second
	// serverContainer is the name of the server's container in the manifest.
	serverContainer = "server"
)

// drainBudget returns the budget of the drain of a server started with args,
// computed by drain.New with the options the server derives from them, and
// the server's configuration.
func drainBudget(args []string) (time.Duration, demoflags.Config, error) {
	cfg, err := demoflags.Parse(args, io.Discard)
	if err != nil {
		return 0, cfg, fmt.Errorf("server flags %q: %w", args, err)
	}
	hooks := make([]stophook.Hook, cfg.StopHooks())
	for i := range hooks {
		hooks[i] = stophook.Func(func(context.Context, stophook.Event) error { return nil })
	}
	srv := grpc.NewServer()
	defer srv.Stop()
	d := drain.New(srv, interceptors.NewTracker(), cfg.DrainOptions(hooks...)...)
	return d.Budget(), cfg, nil
}

// checkLimit returns an error unless limit, the time the supervisor allows
// from its signal to its kill, covers budget with at least minMargin to
// spare.
func checkLimit(setting string, limit, budget time.Duration) error {
	if limit < budget+minMargin {
		return fmt.Errorf("%s is %v: the drain may take %v, and the margin must be at least %v: raise it to at least %v, or shorten the drain",
			setting, limit, budget, minMargin, (budget + minMargin).Round(time.Second))
	}
	return nil
}

// hasFlag reports whether args set the flag name, in any of the forms the
// flag package accepts.
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// Just the fields of the Kubernetes objects that the check reads.
type (
	k8sObject struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	k8sDeployment struct {
		Spec struct {
			Template struct {
				Spec k8sPodSpec `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	k8sPodSpec struct {
		TerminationGracePeriodSeconds *int64         `json:"terminationGracePeriodSeconds"`
		Containers                    []k8sContainer `json:"containers"`
	}
	k8sContainer struct {
		Name    string   `json:"name"`
		Command []string `json:"command"`
		Args    []string `json:"args"`
		Ports   []struct {
			ContainerPort int `json:"containerPort"`
		} `json:"ports"`
		ReadinessProbe *struct {
			GRPC *struct {
				Port int `json:"port"`
			} `json:"grpc"`
		} `json:"readinessProbe"`
	}
)

// yamlSeparator matches the line between two documents of a YAML stream.
var yamlSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// checkKubernetes checks the Deployments of a manifest: their server
// container must be started with valid flags including a readiness delay,
// listen where its readiness probe, a native gRPC one, asks, and the pod's
// terminationGracePeriodSeconds must cover the drain's budget with a
// margin. It returns the budget of the last Deployment checked.
func checkKubernetes(manifest []byte) (time.Duration, error) {
	var budget time.Duration
	deployments := 0
	for i, doc := range yamlSeparator.Split(string(manifest), -1) {
		var obj k8sObject
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			return 0, fmt.Errorf("document %d: %v", i, err)
		}
		if obj.Kind != "Deployment" {
			continue
		}
		deployments++
		var dep k8sDeployment
		if err := yaml.Unmarshal([]byte(doc), &dep); err != nil {
			return 0, fmt.Errorf("Deployment %s: %v", obj.Metadata.Name, err)
		}
		b, err := checkPod(dep.Spec.Template.Spec)
		if err != nil {
			return 0, fmt.Errorf("Deployment %s: %w", obj.Metadata.Name, err)
		}
		budget = b
	}
	if deployments == 0 {
		return 0, errors.New("no Deployment in the manifest")
	}
	return budget, nil
}

func checkPod(pod k8sPodSpec) (time.Duration, error) {
	var c *k8sContainer
	for i := range pod.Containers {
		if pod.Containers[i].Name == serverContainer {
			c = &pod.Containers[i]
		}
	}
	if c == nil {
		return 0, fmt.Errorf("no container named %q", serverContainer)
	}
	args := c.Args
	if len(c.Command) > 0 {
		args = append(append([]string(nil), c.Command[1:]...), c.Args...)
	}
	budget, cfg, err := drainBudget(args)
	if err != nil {
		return 0, fmt.Errorf("container %s: %w", c.Name, err)
	}
	if !hasFlag(args, "readiness-delay") {
		return 0, fmt.Errorf("container %s: no -readiness-delay: without it, the pod stops listening while Services still send it new connections", c.Name)
	}
	if cfg.ReadinessDelay <= 0 {
		return 0, fmt.Errorf("container %s: -readiness-delay is %v: it must cover the propagation of the endpoint removal", c.Name, cfg.ReadinessDelay)
	}

	host, portText, _ := net.SplitHostPort(cfg.Addr) // valid: Parse checked it
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		return 0, fmt.Errorf("container %s: -addr %s is a loopback address, out of reach of the kubelet's probes and of the Service", c.Name, cfg.Addr)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port == 0 {
		return 0, fmt.Errorf("container %s: -addr %s: want a fixed port", c.Name, cfg.Addr)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.GRPC == nil {
		return 0, fmt.Errorf("container %s: no native gRPC readiness probe (readinessProbe.grpc): nothing would see the server report NOT_SERVING", c.Name)
	}
	if c.ReadinessProbe.GRPC.Port != port {
		return 0, fmt.Errorf("container %s: the readiness probe asks port %d, the server listens on %s", c.Name, c.ReadinessProbe.GRPC.Port, cfg.Addr)
	}
	exposed := false
	for _, p := range c.Ports {
		exposed = exposed || p.ContainerPort == port
	}
	if !exposed {
		return 0, fmt.Errorf("container %s: port %d of -addr is not among its ports", c.Name, port)
	}

	limit, setting := kubernetesDefaultGrace, "terminationGracePeriodSeconds (unset: the default)"
	if s := pod.TerminationGracePeriodSeconds; s != nil {
		limit, setting = time.Duration(*s)*time.Second, "terminationGracePeriodSeconds"
	}
	return budget, checkLimit(setting, limit, budget)
}

// A systemdUnit maps each section of a unit file to its settings, each
// setting to its values in order.
type systemdUnitFile map[string]map[string][]string

// parseSystemdUnit reads a unit file: sections, "Key=Value" lines, comments
// starting with '#' or ';', and lines continued by a final backslash.
func parseSystemdUnit(unit []byte) (systemdUnitFile, error) {
	u := systemdUnitFile{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(unit))
	line, n := "", 0
	for sc.Scan() {
		n++
		text := strings.TrimSpace(sc.Text())
		if line == "" && (text == "" || text[0] == '#' || text[0] == ';') {
			continue
		}
		if line != "" && (text != "" && (text[0] == '#' || text[0] == ';')) {
			continue // comments may sit among continuation lines
		}
		if cut, ok := strings.CutSuffix(text, `\`); ok {
			line += cut + " "
			continue
		}
		line += text
		switch {
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		case section == "":
			return nil, fmt.Errorf("line %d: %q before any section", n, line)
		default:
			key, value, ok := strings.Cut(line, "=")
			if !ok {
				return nil, fmt.Errorf("line %d: %q is not Key=Value", n, line)
			}
			key = strings.TrimSpace(key)
			u[section][key] = append(u[section][key], strings.TrimSpace(value))
		}
		line = ""
	}
	if line != "" {
		return nil, errors.New("the last line is continued by a backslash")
	}
	return u, sc.Err()
}

// last returns the value that takes effect for a setting: the last one.
func (u systemdUnitFile) last(section, key string) (string, bool) {
	vs := u[section][key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

// systemdUnits are the units of systemd time spans, in seconds.
var systemdUnits = map[string]float64{
	"us": 1e-6, "usec": 1e-6, "µs": 1e-6,
	"ms": 1e-3, "msec": 1e-3,
	"": 1, "s": 1, "sec": 1, "second": 1, "seconds": 1,
	"m": 60, "min": 60, "minute": 60, "minutes": 60,
	"h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
	"d": 86400, "day": 86400, "days": 86400,
}

var systemdSpanPart = regexp.MustCompile(`^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zµ]*)`)

// parseSystemdTimespan parses a systemd time span such as "35", "35s" or
// "1min 30s". It refuses "infinity".
func parseSystemdTimespan(s string) (time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		return 0, errors.New("empty time span")
	}
	if strings.TrimSpace(s) == "infinity" {
		return 0, errors.New("infinity: the stop is not bounded")
	}
	var total float64
	for rest := s; strings.TrimSpace(rest) != ""; {
		m := systemdSpanPart.FindStringSubmatch(rest)
		if m == nil {
			return 0, fmt.Errorf("time span %q: cannot parse %q", s, rest)
		}
		unit, ok := systemdUnits[m[2]]
		if !ok {
			return 0, fmt.Errorf("time span %q: unknown unit %q", s, m[2])
		}
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			return 0, fmt.Errorf("time span %q: %v", s, err)
		}
		total += v * unit
		rest = rest[len(m[0]):]
	}
	return time.Duration(total * float64(time.Second)), nil
}

// checkSystemd checks a unit file: ExecStart runs the server with valid
// flags, KillMode=control-group sends SIGTERM to every process of the
// service (an old server still draining after an upgrade included), KillSignal is one
// that drains, and TimeoutStopSec covers the drain's budget with a margin.
// It returns the budget.
func checkSystemd(unit []byte) (time.Duration, error) {
	u, err := parseSystemdUnit(unit)
	if err != nil {
		return 0, err
	}
	if u["Service"] == nil {
		return 0, errors.New("no [Service] section")
	}
	exec, ok := u.last("Service", "ExecStart")
	if !ok || exec == "" {
		return 0, errors.New("no ExecStart")
	}
	args := strings.Fields(strings.TrimLeft(exec, "-@:+!"))
	budget, _, err := drainBudget(args[1:])
	if err != nil {
		return 0, fmt.Errorf("ExecStart: %w", err)
	}

	if mode, _ := u.last("Service", "KillMode"); mode != "control-group" {
		if mode == "" {
			mode = "unset"
		}
		return 0, fmt.Errorf("KillMode is %s, want control-group, said aloud: SIGTERM to every process of the service, an old server draining after an upgrade included, SIGKILL only after TimeoutStopSec", mode)
	}
	if sig, ok := u.last("Service", "KillSignal"); ok {
		switch strings.TrimPrefix(sig, "SIG") {
		case "TERM", "INT":
		default:
			return 0, fmt.Errorf("KillSignal is %s, want SIGTERM or SIGINT, which start the drain", sig)
		}
	}
	setting := "TimeoutStopSec"
	span, ok := u.last("Service", setting)
	if !ok {
		setting = "TimeoutSec"
		span, ok = u.last("Service", setting)
	}
	if !ok {
		return 0, errors.New("no TimeoutStopSec: the limit would be systemd's DefaultTimeoutStopSec, set outside the unit")
	}
	limit, err := parseSystemdTimespan(span)
	if err != nil {
		return 0, fmt.Errorf("%s: %v", setting, err)
	}
	return budget, checkLimit(setting, limit, budget)
}

// budgetComment matches the sentence of a deployment's comments that gives
// the budget of its flags.
var budgetComment = regexp.MustCompile(`the budget is ([0-9a-z.]+)\.`)

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// edit returns s with old replaced by new, which must be there.
func edit(t *testing.T, s []byte, old, new string) []byte {
	t.Helper()
	if !bytes.Contains(s, []byte(old)) {
		t.Fatalf("the file has no %q to replace", old)
	}
	return bytes.Replace(s, []byte(old), []byte(new), 1)
}

// TestShippedDeployments checks the files themselves, and that the budget
// their comments announce is the one their flags give.
func TestShippedDeployments(t *testing.T) {
	for _, tt := range []struct {
		name  string
		file  string
		check func([]byte) (time.Duration, error)
	}{
		{name: "kubernetes", file: kubernetesManifest, check: checkKubernetes},
		{name: "systemd", file: systemdUnit, check: checkSystemd},
	} {
		t.Run(tt.name, func(t *testing.T) {
			content := readFile(t, tt.file)
			budget, err := tt.check(content)
			if err != nil {
				t.Fatalf("%s: %v", tt.file, err)
			}
			m := budgetComment.FindSubmatch(content)
			if m == nil {
				t.Fatalf("%s: no comment %q", tt.file, budgetComment)
			}
			if got := string(m[1]); got != budget.String() {
				t.Errorf("%s: the comments give a budget of %s, the flags %v", tt.file, got, budget)
			}
		})
	}
}

// seconds returns the whole seconds of d, rounded up.
func seconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

func TestCheckKubernetes(t *testing.T) {
	shipped := readFile(t, kubernetesManifest)
	budget, err := checkKubernetes(shipped)
	if err != nil {
		t.Fatalf("checkKubernetes(%s) = %v", kubernetesManifest, err)
	}
	const shippedGrace = "terminationGracePeriodSeconds: 40"
	grace := func(s int64) string { return fmt.Sprintf("terminationGracePeriodSeconds: %d", s) }
	enough := seconds(budget + minMargin)
	for _, tt := range []struct {
		name     string
		old, new string
		wantErr  string // "" for none
	}{
		{name: "as shipped"},
		{name: "grace period of the pod below the budget", old: shippedGrace, new: grace(seconds(budget) - 1), wantErr: fmt.Sprintf("terminationGracePeriodSeconds is %ds", seconds(budget)-1)},
		{name: "grace period of the pod within the margin", old: shippedGrace, new: grace(enough - 1), wantErr: "margin must be at least 5s"},
		{name: "grace period of the pod just enough", old: shippedGrace, new: grace(enough)},
		{name: "grace period of the pod unset", old: shippedGrace, new: "", wantErr: "unset"},
		{name: "drain grace period raised", old: "-grace=20s", new: "-grace=40s", wantErr: "the drain may take"},
		{name: "readiness delay missing", old: "- -readiness-delay=5s", new: "", wantErr: "no -readiness-delay"},
		{name: "readiness delay zero", old: "-readiness-delay=5s", new: "-readiness-delay=0s", wantErr: "-readiness-delay is 0s"},
		{name: "negative duration", old: "-force-wait=1s", new: "-force-wait=-1s", wantErr: "-force-wait -1s: negative duration"},
		{name: "unknown flag", old: "-force-wait=1s", new: "-force-timeout=1s", wantErr: "force-timeout"},
		{name: "loopback address", old: "-addr=0.0.0.0:50051", new: "-addr=127.0.0.1:50051", wantErr: "loopback"},
		{name: "probe on another port", old: "-addr=0.0.0.0:50051", new: "-addr=0.0.0.0:50052", wantErr: "the readiness probe asks port 50051"},
		{name: "no gRPC readiness probe", old: "grpc:\n              port: 50051", new: "tcpSocket:\n              port: 50051", wantErr: "no native gRPC readiness probe"},
		{name: "no server container", old: "- name: server", new: "- name: app", wantErr: `no container named "server"`},
		{name: "no Deployment", old: "kind: Deployment", new: "kind: StatefulSet", wantErr: "no Deployment"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			manifest := shipped
			if tt.old != "" {
				manifest = edit(t, shipped, tt.old, tt.new)
			}
			_, err := checkKubernetes(manifest)
			checkError(t, "checkKubernetes()", err, tt.wantErr)
		})
	}
}

func TestCheckSystemd(t *testing.T) {
	shipped := readFile(t, systemdUnit)
	budget, err := checkSystemd(shipped)
	if err != nil {
		t.Fatalf("checkSystemd(%s) = %v", systemdUnit, err)
	}
	const shippedTimeout = "TimeoutStopSec=35s"
	timeout := func(s int64) string { return fmt.Sprintf("TimeoutStopSec=%ds", s) }
	enough := seconds(budget + minMargin)
	for _, tt := range []struct {
		name     string
		old, new string
		wantErr  string // "" for none
	}{
		{name: "as shipped"},
		{name: "stop timeout below the budget", old: shippedTimeout, new: timeout(seconds(budget) - 1), wantErr: fmt.Sprintf("TimeoutStopSec is %ds", seconds(budget)-1)},
		{name: "stop timeout within the margin", old: shippedTimeout, new: timeout(enough - 1), wantErr: "margin must be at least 5s"},
		{name: "stop timeout just enough", old: shippedTimeout, new: timeout(enough)},
		{name: "stop timeout in minutes", old: shippedTimeout, new: "TimeoutStopSec=1min"},
		{name: "stop timeout in minutes and seconds", old: shippedTimeout, new: fmt.Sprintf("TimeoutStopSec=0min %ds", enough)},
		{name: "stop timeout in bare seconds", old: shippedTimeout, new: fmt.Sprintf("TimeoutStopSec=%d", enough-1), wantErr: "margin must be at least 5s"},
		{name: "stop timeout from TimeoutSec", old: shippedTimeout, new: "TimeoutSec=35s"},
		{name: "stop timeout infinite", old: shippedTimeout, new: "TimeoutStopSec=infinity", wantErr: "not bounded"},
		{name: "stop timeout missing", old: shippedTimeout, new: "", wantErr: "no TimeoutStopSec"},
		{name: "drain grace period raised", old: "-grace=20s", new: "-grace=40s", wantErr: "the drain may take"},
		{name: "kill mode mixed", old: "\nKillMode=control-group\n", new: "\nKillMode=mixed\n", wantErr: "KillMode is mixed"},
		{name: "kill mode process", old: "\nKillMode=control-group\n", new: "\nKillMode=process\n", wantErr: "KillMode is process"},
		{name: "kill mode missing", old: "\nKillMode=control-group\n", new: "\n", wantErr: "KillMode is unset"},
		{name: "kill signal SIGINT", old: "KillSignal=SIGTERM", new: "KillSignal=SIGINT"},
		{name: "kill signal SIGKILL", old: "KillSignal=SIGTERM", new: "KillSignal=SIGKILL", wantErr: "KillSignal is SIGKILL"},
		{name: "negative duration", old: "-cancel-grace=3s", new: "-cancel-grace=-3s", wantErr: "-cancel-grace -3s: negative duration"},
		{name: "no ExecStart", old: "ExecStart=", new: "#ExecStart=", wantErr: "no ExecStart"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			unit := shipped
			if tt.old != "" {
				unit = edit(t, shipped, tt.old, tt.new)
			}
			_, err := checkSystemd(unit)
			checkError(t, "checkSystemd()", err, tt.wantErr)
		})
	}
}

func TestParseSystemdTimespan(t *testing.T) {
	for _, tt := range []struct {
		name    string
		in      string
		want    time.Duration
		wantErr bool
	}{
		{name: "bare seconds", in: "35", want: 35 * time.Second},
		{name: "seconds", in: "35s", want: 35 * time.Second},
		{name: "fraction", in: "1.5s", want: 1500 * time.Millisecond},
		{name: "minutes and seconds", in: "1min 30s", want: 90 * time.Second},
		{name: "joined units", in: "1h30min", want: 90 * time.Minute},
		{name: "milliseconds", in: "500ms", want: 500 * time.Millisecond},
		{name: "empty", in: "", wantErr: true},
		{name: "infinity", in: "infinity", wantErr: true},
		{name: "unknown unit", in: "5 fortnights", wantErr: true},
		{name: "garbage", in: "soon", wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSystemdTimespan(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseSystemdTimespan(%q) error = %v, want error: %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseSystemdTimespan(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseSystemdUnit(t *testing.T) {
	unit := "# comment\n[Service]\nExecStart=/bin/x \\\n  -a=1 \\\n  # inner comment\n  -b=2\n; other comment\nEnvironment=A=1\nEnvironment=B=2\n"
	u, err := parseSystemdUnit([]byte(unit))
	if err != nil {
		t.Fatalf("parseSystemdUnit() = %v", err)
	}
	if got, want := strings.Join(strings.Fields(u["Service"]["ExecStart"][0]), " "), "/bin/x -a=1 -b=2"; got != want {
		t.Errorf("ExecStart = %q, want %q", got, want)
	}
	if got, want := strings.Join(u["Service"]["Environment"], ","), "A=1,B=2"; got != want {
		t.Errorf("Environment = %q, want %q", got, want)
	}
	for _, bad := range []string{"Key=before any section\n", "[Service]\nnot a setting\n", "[Service]\nExecStart=/bin/x \\\n"} {
		if _, err := parseSystemdUnit([]byte(bad)); err == nil {
			t.Errorf("parseSystemdUnit(%q) = nil error, want one", bad)
		}
	}
}

// checkError fails t unless err is nil when wantErr is empty, and contains
// wantErr otherwise.
func checkError(t *testing.T, call string, err error, wantErr string) {
	t.Helper()
	switch {
	case wantErr == "" && err != nil:
		t.Errorf("%s = %v, want nil", call, err)
	case wantErr != "" && err == nil:
		t.Errorf("%s = nil, want an error containing %q", call, wantErr)
	case wantErr != "" && !strings.Contains(err.Error(), wantErr):
		t.Errorf("%s = %v, want an error containing %q", call, err, wantErr)
	}
}
