package examples_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
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
// the server's configuration. notify says whether the server runs with
// NOTIFY_SOCKET set, where it registers one more hook.
func drainBudget(args []string, notify bool) (time.Duration, demoflags.Config, error) {
	cfg, err := demoflags.Parse(args, io.Discard)
	if err != nil {
		return 0, cfg, fmt.Errorf("server flags %q: %w", args, err)
	}
	cfg.Notify = notify
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

// Just the fields of the Kubernetes objects that the check reads, with
// their names and shapes in the Kubernetes API (apps/v1, core/v1,
// policy/v1).
type (
	k8sObject struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	k8sLabelSelector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	}
	k8sDeployment struct {
		Spec struct {
			Replicas *int32           `json:"replicas"`
			Selector k8sLabelSelector `json:"selector"`
			Template struct {
				Metadata struct {
					Labels map[string]string `json:"labels"`
				} `json:"metadata"`
				Spec k8sPodSpec `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	k8sPodDisruptionBudget struct {
		Spec struct {
			MinAvailable   *intOrString     `json:"minAvailable"`
			MaxUnavailable *intOrString     `json:"maxUnavailable"`
			Selector       k8sLabelSelector `json:"selector"`
		} `json:"spec"`
	}
	k8sPodSpec struct {
		TerminationGracePeriodSeconds *int64                 `json:"terminationGracePeriodSeconds"`
		SecurityContext               *k8sPodSecurityContext `json:"securityContext"`
		HostNetwork                   bool                   `json:"hostNetwork"`
		HostPID                       bool                   `json:"hostPID"`
		HostIPC                       bool                   `json:"hostIPC"`
		Containers                    []k8sContainer         `json:"containers"`
		InitContainers                []k8sContainer         `json:"initContainers"`
		Volumes                       []map[string]any       `json:"volumes"`
		TopologySpreadConstraints     []k8sTopologySpread    `json:"topologySpreadConstraints"`
	}
	k8sPodSecurityContext struct {
		RunAsNonRoot   *bool              `json:"runAsNonRoot"`
		RunAsUser      *int64             `json:"runAsUser"`
		SeccompProfile *k8sSeccompProfile `json:"seccompProfile"`
	}
	k8sSecurityContext struct {
		RunAsNonRoot             *bool              `json:"runAsNonRoot"`
		RunAsUser                *int64             `json:"runAsUser"`
		SeccompProfile           *k8sSeccompProfile `json:"seccompProfile"`
		AllowPrivilegeEscalation *bool              `json:"allowPrivilegeEscalation"`
		Privileged               *bool              `json:"privileged"`
		ReadOnlyRootFilesystem   *bool              `json:"readOnlyRootFilesystem"`
		Capabilities             *struct {
			Add  []string `json:"add"`
			Drop []string `json:"drop"`
		} `json:"capabilities"`
	}
	k8sSeccompProfile struct {
		Type string `json:"type"`
	}
	k8sTopologySpread struct {
		MaxSkew       int32            `json:"maxSkew"`
		TopologyKey   string           `json:"topologyKey"`
		LabelSelector k8sLabelSelector `json:"labelSelector"`
	}
	k8sContainer struct {
		Name    string   `json:"name"`
		Command []string `json:"command"`
		Args    []string `json:"args"`
		Ports   []struct {
			ContainerPort int `json:"containerPort"`
			HostPort      int `json:"hostPort"`
		} `json:"ports"`
		ReadinessProbe *struct {
			GRPC *struct {
				Port int `json:"port"`
			} `json:"grpc"`
			TimeoutSeconds   int32 `json:"timeoutSeconds"`
			FailureThreshold int32 `json:"failureThreshold"`
		} `json:"readinessProbe"`
		SecurityContext *k8sSecurityContext `json:"securityContext"`
	}
)

// intOrString is a Kubernetes IntOrString: 1 or "50%".
type intOrString struct {
	n       int
	percent string
}

func (v *intOrString) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &v.n); err == nil {
		return nil
	}
	return json.Unmarshal(b, &v.percent)
}

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
	docs := yamlSeparator.Split(string(manifest), -1)
	pdbs, err := podDisruptionBudgets(docs)
	if err != nil {
		return 0, err
	}
	for i, doc := range docs {
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
		if err := checkRestricted(dep.Spec.Template.Spec); err != nil {
			return 0, fmt.Errorf("Deployment %s: the restricted Pod Security Standard: %w", obj.Metadata.Name, err)
		}
		if err := checkAvailability(dep, pdbs); err != nil {
			return 0, fmt.Errorf("Deployment %s: %w", obj.Metadata.Name, err)
		}
		budget = b
	}
	if deployments == 0 {
		return 0, errors.New("no Deployment in the manifest")
	}
	return budget, nil
}

// podDisruptionBudgets returns the PodDisruptionBudgets of a manifest.
func podDisruptionBudgets(docs []string) ([]k8sPodDisruptionBudget, error) {
	var pdbs []k8sPodDisruptionBudget
	for i, doc := range docs {
		var obj k8sObject
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			return nil, fmt.Errorf("document %d: %v", i, err)
		}
		if obj.Kind != "PodDisruptionBudget" {
			continue
		}
		var pdb k8sPodDisruptionBudget
		if err := yaml.Unmarshal([]byte(doc), &pdb); err != nil {
			return nil, fmt.Errorf("PodDisruptionBudget %s: %v", obj.Metadata.Name, err)
		}
		pdbs = append(pdbs, pdb)
	}
	return pdbs, nil
}

// selects reports whether sel selects pods with labels; an empty selector
// selects nothing here, as no manifest of ours means "every pod".
func selects(sel k8sLabelSelector, labels map[string]string) bool {
	if len(sel.MatchLabels) == 0 {
		return false
	}
	for k, v := range sel.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// checkAvailability checks that a Deployment stays available through
// voluntary disruptions and the loss of a node: more than one replica, a
// PodDisruptionBudget that keeps one serving and still lets a node drain,
// and a topology spread over nodes.
func checkAvailability(dep k8sDeployment, pdbs []k8sPodDisruptionBudget) error {
	labels := dep.Spec.Template.Metadata.Labels
	replicas := 1
	if r := dep.Spec.Replicas; r != nil {
		replicas = int(*r)
	}
	if replicas < 2 {
		return fmt.Errorf("%d replica(s): a drain, a node's loss or an eviction leaves no server", replicas)
	}
	var pdb *k8sPodDisruptionBudget
	for i := range pdbs {
		if selects(pdbs[i].Spec.Selector, labels) {
			pdb = &pdbs[i]
		}
	}
	if pdb == nil {
		return errors.New("no PodDisruptionBudget selects its pods: a node drain may evict every replica at once")
	}
	switch min, maxU := pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable; {
	case min != nil && min.percent == "" && (min.n < 1 || min.n >= replicas):
		return fmt.Errorf("PodDisruptionBudget minAvailable %d with %d replicas: want 1 to %d, so that one replica serves and one may be evicted", min.n, replicas, replicas-1)
	case maxU != nil && maxU.percent == "" && (maxU.n < 1 || maxU.n >= replicas):
		return fmt.Errorf("PodDisruptionBudget maxUnavailable %d with %d replicas: want 1 to %d", maxU.n, replicas, replicas-1)
	case min == nil && maxU == nil:
		return errors.New("PodDisruptionBudget with neither minAvailable nor maxUnavailable")
	}
	for _, c := range dep.Spec.Template.Spec.TopologySpreadConstraints {
		if c.TopologyKey == "kubernetes.io/hostname" && c.MaxSkew >= 1 && selects(c.LabelSelector, labels) {
			return nil
		}
	}
	return errors.New("no topologySpreadConstraints over kubernetes.io/hostname selecting its pods: its replicas may share one node")
}

// restrictedVolumes are the volume types that the restricted Pod Security
// Standard allows.
var restrictedVolumes = []string{"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}

// checkRestricted checks a pod against the restricted Pod Security
// Standard (kubernetes.io/docs/concepts/security/pod-security-standards),
// field by field, as the admission controller does: no host namespaces,
// ports or volumes; a non-root user, at the pod's level or every
// container's; seccomp's RuntimeDefault (or a Localhost profile), likewise;
// and for every container no privilege, no privilege escalation, every
// capability dropped (NET_BIND_SERVICE alone may be added back). It also
// wants the read-only root file system that the README promises.
func checkRestricted(pod k8sPodSpec) error {
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		return errors.New("hostNetwork, hostPID and hostIPC must be false")
	}
	for _, v := range pod.Volumes {
		allowed := false
		for k := range v {
			allowed = allowed || slices.Contains(restrictedVolumes, k)
		}
		if !allowed {
			return fmt.Errorf("volume %v: want one of the types %v", v["name"], restrictedVolumes)
		}
	}
	psc := pod.SecurityContext
	if psc == nil {
		psc = &k8sPodSecurityContext{}
	}
	if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		return errors.New("securityContext.runAsUser is 0, root")
	}
	if psc.RunAsNonRoot != nil && !*psc.RunAsNonRoot {
		return errors.New("securityContext.runAsNonRoot is false")
	}
	if err := checkSeccomp("securityContext", psc.SeccompProfile); err != nil {
		return err
	}
	for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
		sc := c.SecurityContext
		if sc == nil {
			sc = &k8sSecurityContext{}
		}
		where := "container " + c.Name + ": securityContext"
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				return fmt.Errorf("container %s: hostPort %d", c.Name, p.HostPort)
			}
		}
		switch {
		case sc.Privileged != nil && *sc.Privileged:
			return fmt.Errorf("%s.privileged is true", where)
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			return fmt.Errorf("%s.allowPrivilegeEscalation must be false", where)
		case sc.RunAsUser != nil && *sc.RunAsUser == 0:
			return fmt.Errorf("%s.runAsUser is 0, root", where)
		case sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot:
			return fmt.Errorf("%s.runAsNonRoot is false", where)
		case sc.RunAsNonRoot == nil && psc.RunAsNonRoot == nil:
			return fmt.Errorf("%s.runAsNonRoot: must be true, here or for the pod", where)
		case sc.SeccompProfile == nil && psc.SeccompProfile == nil:
			return fmt.Errorf("%s.seccompProfile: must be RuntimeDefault or Localhost, here or for the pod", where)
		case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL"):
			return fmt.Errorf("%s.capabilities.drop must include ALL", where)
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			return fmt.Errorf("%s.readOnlyRootFilesystem must be true", where)
		}
		if err := checkSeccomp(where, sc.SeccompProfile); err != nil {
			return err
		}
		for _, add := range sc.Capabilities.Add {
			if add != "NET_BIND_SERVICE" {
				return fmt.Errorf("%s.capabilities.add has %s: only NET_BIND_SERVICE may be added", where, add)
			}
		}
	}
	return nil
}

// checkSeccomp checks a seccomp profile, if set: RuntimeDefault or
// Localhost.
func checkSeccomp(where string, p *k8sSeccompProfile) error {
	if p != nil && p.Type != "RuntimeDefault" && p.Type != "Localhost" {
		return fmt.Errorf("%s.seccompProfile.type is %q, want RuntimeDefault or Localhost", where, p.Type)
	}
	return nil
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
	// No systemd in a pod: NOTIFY_SOCKET is not set.
	budget, cfg, err := drainBudget(args, false)
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
	// Kubernetes' defaults: a timeout of 1s, 3 failures.
	timeout, failures := max(c.ReadinessProbe.TimeoutSeconds, 1), c.ReadinessProbe.FailureThreshold
	if failures == 0 {
		failures = 3
	}
	if timeout < 2 || failures < 2 {
		return 0, fmt.Errorf("container %s: the readiness probe's timeoutSeconds is %d and failureThreshold %d: want 2 or more of each, so that one slow answer does not take the pod out of its Service", c.Name, timeout, failures)
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
	// systemd sets NOTIFY_SOCKET for services of Type=notify or
	// notify-reload, and for those with a NotifyAccess other than none.
	typ, _ := u.last("Service", "Type")
	access, _ := u.last("Service", "NotifyAccess")
	notify := typ == "notify" || typ == "notify-reload" || access != "" && access != "none"
	budget, _, err := drainBudget(args[1:], notify)
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
	const shippedGrace = "terminationGracePeriodSeconds: 35"
	grace := func(s int64) string { return fmt.Sprintf("terminationGracePeriodSeconds: %d", s) }
	enough := seconds(budget + minMargin)
	const (
		podSeccomp       = "        seccompProfile:\n          type: RuntimeDefault\n"
		containerSeccomp = "            seccompProfile:\n              type: RuntimeDefault\n"
	)
	for _, tt := range []struct {
		name       string
		old, new   string
		old2, new2 string // a second edit, if old2 is not ""
		wantErr    string // "" for none
	}{
		{name: "as shipped"},
		{name: "grace period of the pod below the budget", old: shippedGrace, new: grace(seconds(budget) - 1), wantErr: fmt.Sprintf("terminationGracePeriodSeconds is %ds", seconds(budget)-1)},
		{name: "grace period of the pod within the margin", old: shippedGrace, new: grace(enough - 1), wantErr: "margin must be at least 5s"},
		{name: "grace period of the pod just enough", old: shippedGrace, new: grace(enough)},
		{name: "grace period of the pod unset", old: shippedGrace, new: "", wantErr: "unset"},
		{name: "drain grace period raised", old: "-grace=15s", new: "-grace=40s", wantErr: "the drain may take"},
		{name: "readiness delay missing", old: "- -readiness-delay=5s", new: "", wantErr: "no -readiness-delay"},
		{name: "readiness delay zero", old: "-readiness-delay=5s", new: "-readiness-delay=0s", wantErr: "-readiness-delay is 0s"},
		{name: "negative duration", old: "-force-wait=1s", new: "-force-wait=-1s", wantErr: "-force-wait -1s: negative duration"},
		{name: "unknown flag", old: "-force-wait=1s", new: "-force-timeout=1s", wantErr: "force-timeout"},
		{name: "loopback address", old: "-addr=0.0.0.0:50051", new: "-addr=127.0.0.1:50051", wantErr: "loopback"},
		{name: "probe on another port", old: "-addr=0.0.0.0:50051", new: "-addr=0.0.0.0:50052", wantErr: "the readiness probe asks port 50051"},
		{name: "no gRPC readiness probe", old: "grpc:\n              port: 50051", new: "tcpSocket:\n              port: 50051", wantErr: "no native gRPC readiness probe"},
		{name: "no server container", old: "- name: server", new: "- name: app", wantErr: `no container named "server"`},
		{name: "no Deployment", old: "kind: Deployment", new: "kind: StatefulSet", wantErr: "no Deployment"},

		// The readiness probe tolerates one slow answer.
		{name: "probe timeout 1s", old: "timeoutSeconds: 2", new: "timeoutSeconds: 1", wantErr: "timeoutSeconds is 1"},
		{name: "probe timeout unset", old: "timeoutSeconds: 2", new: "", wantErr: "timeoutSeconds is 1"},
		{name: "probe fails at once", old: "failureThreshold: 2", new: "failureThreshold: 1", wantErr: "failureThreshold 1"},
		{name: "probe failure threshold unset", old: "failureThreshold: 2", new: ""},

		// The restricted Pod Security Standard, field by field.
		{name: "seccomp profile for the container only", old: podSeccomp, new: ""},
		{name: "seccomp profile for the pod only", old: containerSeccomp, new: ""},
		{name: "no seccomp profile", old: podSeccomp, new: "", old2: containerSeccomp, wantErr: "container server: securityContext.seccompProfile: must be RuntimeDefault or Localhost"},
		{name: "seccomp unconfined", old: "seccompProfile:\n          type: RuntimeDefault", new: "seccompProfile:\n          type: Unconfined", wantErr: `securityContext.seccompProfile.type is "Unconfined"`},
		{name: "container seccomp unconfined", old: "seccompProfile:\n              type: RuntimeDefault", new: "seccompProfile:\n              type: Unconfined", wantErr: `container server: securityContext.seccompProfile.type is "Unconfined"`},
		{name: "pod may run as root", old: "runAsNonRoot: true\n        runAsUser", new: "runAsNonRoot: false\n        runAsUser", wantErr: "securityContext.runAsNonRoot is false"},
		{name: "container may run as root", old: "runAsNonRoot: true\n            allowPrivilegeEscalation", new: "runAsNonRoot: false\n            allowPrivilegeEscalation", wantErr: "container server: securityContext.runAsNonRoot is false"},
		{name: "root user", old: "runAsUser: 65532", new: "runAsUser: 0", wantErr: "runAsUser is 0"},
		{name: "privilege escalation", old: "allowPrivilegeEscalation: false", new: "allowPrivilegeEscalation: true", wantErr: "allowPrivilegeEscalation must be false"},
		{name: "privilege escalation unset", old: "            allowPrivilegeEscalation: false\n", new: "", wantErr: "allowPrivilegeEscalation must be false"},
		{name: "privileged", old: "allowPrivilegeEscalation: false", new: "allowPrivilegeEscalation: false\n            privileged: true", wantErr: "privileged is true"},
		{name: "capabilities kept", old: `drop: ["ALL"]`, new: `drop: ["NET_RAW"]`, wantErr: "capabilities.drop must include ALL"},
		{name: "capability added", old: `drop: ["ALL"]`, new: `drop: ["ALL"]` + "\n              " + `add: ["SYS_ADMIN"]`, wantErr: "only NET_BIND_SERVICE"},
		{name: "NET_BIND_SERVICE added", old: `drop: ["ALL"]`, new: `drop: ["ALL"]` + "\n              " + `add: ["NET_BIND_SERVICE"]`},
		{name: "writable root file system", old: "readOnlyRootFilesystem: true", new: "readOnlyRootFilesystem: false", wantErr: "readOnlyRootFilesystem must be true"},
		{name: "host network", old: "automountServiceAccountToken: false", new: "automountServiceAccountToken: false\n      hostNetwork: true", wantErr: "hostNetwork"},
		{name: "host port", old: "containerPort: 50051", new: "containerPort: 50051\n              hostPort: 50051", wantErr: "hostPort 50051"},
		{name: "hostPath volume", old: "emptyDir: {}", new: "hostPath:\n            path: /data", wantErr: "volume data"},

		// Availability through evictions and the loss of a node.
		{name: "one replica", old: "replicas: 2", new: "replicas: 1", wantErr: "1 replica(s)"},
		{name: "no PodDisruptionBudget", old: "kind: PodDisruptionBudget", new: "kind: ConfigMap", wantErr: "no PodDisruptionBudget"},
		{name: "PodDisruptionBudget blocks evictions", old: "minAvailable: 1", new: "minAvailable: 2", wantErr: "minAvailable 2 with 2 replicas"},
		{name: "PodDisruptionBudget allows every eviction", old: "minAvailable: 1", new: "minAvailable: 0", wantErr: "minAvailable 0"},
		{name: "PodDisruptionBudget by maxUnavailable", old: "minAvailable: 1", new: "maxUnavailable: 1"},
		{name: "PodDisruptionBudget in percent", old: "minAvailable: 1", new: `minAvailable: "50%"`},
		{name: "no topology spread", old: "topologyKey: kubernetes.io/hostname", new: "topologyKey: topology.kubernetes.io/zone", wantErr: "no topologySpreadConstraints over kubernetes.io/hostname"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			manifest := shipped
			if tt.old != "" {
				manifest = edit(t, manifest, tt.old, tt.new)
			}
			if tt.old2 != "" {
				manifest = edit(t, manifest, tt.old2, tt.new2)
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
