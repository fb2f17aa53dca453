package examples_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/drainkit/drainkit/examples/internal/demoflags"
)

const (
	dockerfilePath = "server/Dockerfile"
	rootREADME     = "../README.md"
)

// A dockerInstruction is one instruction of a Dockerfile, its continuation
// lines joined.
type dockerInstruction struct {
	cmd  string // upper case: FROM, RUN, USER...
	args string
}

// A dockerStage is a FROM and the instructions up to the next one.
type dockerStage struct {
	from         string // the image, without --platform
	instructions []dockerInstruction
}

// last returns the arguments of the stage's last instruction cmd: the one
// that takes effect for ENTRYPOINT, CMD and USER.
func (s dockerStage) last(cmd string) (string, bool) {
	for i := len(s.instructions) - 1; i >= 0; i-- {
		if s.instructions[i].cmd == cmd {
			return s.instructions[i].args, true
		}
	}
	return "", false
}

// parseDockerfile reads the stages of a Dockerfile: comment lines, lines
// continued by a final backslash (the default escape character), and
// instructions, each as its command and the rest of its line.
func parseDockerfile(content []byte) ([]dockerStage, error) {
	var stages []dockerStage
	sc := bufio.NewScanner(bytes.NewReader(content))
	line, n := "", 0
	for sc.Scan() {
		n++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue // both are removed even among continuation lines
		}
		if cut, ok := strings.CutSuffix(text, `\`); ok {
			line += cut + " "
			continue
		}
		line += text
		cmd, args, _ := strings.Cut(line, " ")
		in := dockerInstruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		line = ""
		if in.cmd == "FROM" {
			fields := strings.Fields(in.args)
			for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
				fields = fields[1:]
			}
			if len(fields) == 0 {
				return nil, fmt.Errorf("line %d: FROM without an image", n)
			}
			stages = append(stages, dockerStage{from: fields[0]})
			continue
		}
		if len(stages) == 0 {
			if in.cmd == "ARG" {
				continue // the only instruction allowed before FROM
			}
			return nil, fmt.Errorf("line %d: %s before any FROM", n, in.cmd)
		}
		s := &stages[len(stages)-1]
		s.instructions = append(s.instructions, in)
	}
	if line != "" {
		return nil, errors.New("the last line is continued by a backslash")
	}
	if len(stages) == 0 {
		return nil, errors.New("no FROM")
	}
	return stages, sc.Err()
}

// execForm returns the words of an instruction in exec form, a JSON array
// of strings, and an error for the shell form.
func execForm(cmd, args string) ([]string, error) {
	var words []string
	if err := json.Unmarshal([]byte(args), &words); err != nil || len(words) == 0 {
		return nil, fmt.Errorf("%s %s is in shell form: /bin/sh -c would be PID 1, and the server, its child, would not receive SIGTERM; write it as a JSON array", cmd, args)
	}
	return words, nil
}

// buildsServer matches the go build command of the demo server.
var buildsServer = regexp.MustCompile(`go build .*\./examples/server\b`)

// A builtImage is what checkDockerfile learns of the image a Dockerfile builds.
type builtImage struct {
	uid  int64    // of USER
	cmd  []string // ENTRYPOINT's arguments, then CMD's
	data string   // the directory the server's user owns
}

// dockerStopTimeout is how long docker stop waits, by default, between its
// SIGTERM and its SIGKILL.
const dockerStopTimeout = 10 * time.Second

// checkDockerfile checks that a Dockerfile builds the demo server in a
// stage of its own, as a static binary, onto a small runtime image that
// runs it as a non-root user, in exec form, with flags that the server
// accepts, whose drain fits docker stop's default timeout with a margin,
// and a database in a directory that user owns.
func checkDockerfile(content []byte) (builtImage, error) {
	var img builtImage
	stages, err := parseDockerfile(content)
	if err != nil {
		return img, err
	}
	if len(stages) < 2 {
		return img, errors.New("one stage: the runtime image would carry the Go toolchain; build in a stage of its own")
	}
	static := false
	for _, s := range stages[:len(stages)-1] {
		for _, in := range s.instructions {
			if in.cmd == "RUN" && strings.Contains(in.args, "CGO_ENABLED=0") && buildsServer.MatchString(in.args) {
				static = true
			}
		}
	}
	if !static {
		return img, errors.New("no RUN with CGO_ENABLED=0 go build ... ./examples/server: the binary would need the C library of the build image")
	}
	final := stages[len(stages)-1]
	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") && final.from != "scratch" {
		return img, fmt.Errorf("runtime image %s: want distroless static or scratch, for a static binary", final.from)
	}

	user, ok := final.last("USER")
	if !ok {
		return img, errors.New("no USER in the runtime stage: the server would run as root")
	}
	uidText, _, _ := strings.Cut(user, ":")
	img.uid, err = strconv.ParseInt(uidText, 10, 64)
	switch {
	case err != nil:
		return img, fmt.Errorf("USER %s: want a numeric user, which Kubernetes' runAsNonRoot can check", user)
	case img.uid == 0:
		return img, fmt.Errorf("USER %s: the server would run as root", user)
	}

	ep, ok := final.last("ENTRYPOINT")
	if !ok {
		return img, errors.New("no ENTRYPOINT in the runtime stage")
	}
	words, err := execForm("ENTRYPOINT", ep)
	if err != nil {
		return img, err
	}
	img.cmd = words[1:]
	copied := regexp.MustCompile(`(?:^|\s)--from=\S+\s.*\s` + regexp.QuoteMeta(words[0]) + `$`)
	if !slices.ContainsFunc(final.instructions, func(in dockerInstruction) bool { return in.cmd == "COPY" && copied.MatchString(in.args) }) {
		return img, fmt.Errorf("ENTRYPOINT runs %s, which no COPY --from a build stage puts there", words[0])
	}
	if cmd, ok := final.last("CMD"); ok {
		words, err := execForm("CMD", cmd)
		if err != nil {
			return img, err
		}
		img.cmd = append(img.cmd, words...)
	}
	cfg, err := demoflags.Parse(img.cmd, io.Discard)
	if err != nil {
		return img, fmt.Errorf("the flags of ENTRYPOINT and CMD: %w", err)
	}
	// No NOTIFY_SOCKET in a container.
	budget, _, err := drainBudget(img.cmd, false)
	if err != nil {
		return img, err
	}
	if err := checkLimit("docker stop's default timeout", dockerStopTimeout, budget); err != nil {
		return img, fmt.Errorf("the flags of ENTRYPOINT and CMD: %w", err)
	}
	img.data = path.Dir(cfg.DB)
	owned := regexp.MustCompile(`(?:^|\s)--chown=` + regexp.QuoteMeta(uidText) + `(?::\S+)?\s.*\s` + regexp.QuoteMeta(img.data) + `/?$`)
	for _, in := range final.instructions {
		if in.cmd == "COPY" && owned.MatchString(in.args) {
			return img, nil
		}
	}
	return img, fmt.Errorf("-db %s: no COPY --chown=%s makes %s, so the server's user could not create its database", cfg.DB, uidText, img.data)
}

// dockerBuild matches the README's command that builds the image, and
// captures its tag.
var dockerBuild = regexp.MustCompile(`(?m)^docker build -f examples/server/Dockerfile -t (\S+) \.$`)

// Just the fields of a Deployment that checkImage reads.
type imageDeployment struct {
	Spec struct {
		Template struct {
			Spec struct {
				Containers []struct {
					Name            string   `json:"name"`
					Image           string   `json:"image"`
					ImagePullPolicy string   `json:"imagePullPolicy"`
					Args            []string `json:"args"`
					VolumeMounts    []struct {
						MountPath string `json:"mountPath"`
					} `json:"volumeMounts"`
				} `json:"containers"`
			} `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

// checkImage checks that the Kubernetes manifest runs the image that the
// README's docker build command makes, by a name a cluster can use without
// a registry, and keeps the database on a volume, as the root file system
// of its container is read-only.
func checkImage(readmeText, manifest []byte) error {
	m := dockerBuild.FindSubmatch(readmeText)
	if m == nil {
		return fmt.Errorf("the README has no line %q", dockerBuild)
	}
	tag := string(m[1])
	if !strings.Contains(path.Base(tag), ":") || strings.HasSuffix(tag, ":latest") {
		return fmt.Errorf("image tag %s: want a tag other than latest, for which Kubernetes' default pull policy is Always: it would look in a registry for an image loaded into the cluster", tag)
	}
	found := false
	for _, doc := range yamlSeparator.Split(string(manifest), -1) {
		var obj k8sObject
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			return err
		}
		if obj.Kind != "Deployment" {
			continue
		}
		var dep imageDeployment
		if err := yaml.Unmarshal([]byte(doc), &dep); err != nil {
			return err
		}
		for _, c := range dep.Spec.Template.Spec.Containers {
			if c.Name != serverContainer {
				continue
			}
			found = true
			if c.Image != tag {
				return fmt.Errorf("container %s runs image %s, the README builds %s", c.Name, c.Image, tag)
			}
			if c.ImagePullPolicy == "Always" {
				return fmt.Errorf("container %s: imagePullPolicy Always looks for %s in a registry", c.Name, tag)
			}
			cfg, err := demoflags.Parse(c.Args, io.Discard)
			if err != nil {
				return fmt.Errorf("container %s: %w", c.Name, err)
			}
			dir, onVolume := path.Dir(cfg.DB), false
			for _, vm := range c.VolumeMounts {
				mount := path.Clean(vm.MountPath)
				onVolume = onVolume || dir == mount || strings.HasPrefix(dir, mount+"/")
			}
			if !onVolume {
				return fmt.Errorf("container %s: -db %s is on no volume: the root file system is read-only", c.Name, cfg.DB)
			}
		}
	}
	if !found {
		return fmt.Errorf("no Deployment with a container named %q", serverContainer)
	}
	return nil
}

func TestShippedImage(t *testing.T) {
	img, err := checkDockerfile(readFile(t, dockerfilePath))
	if err != nil {
		t.Fatalf("%s: %v", dockerfilePath, err)
	}
	t.Logf("%s: user %d, flags %q, data in %s", dockerfilePath, img.uid, img.cmd, img.data)
	if err := checkImage(readFile(t, rootREADME), readFile(t, kubernetesManifest)); err != nil {
		t.Errorf("%s and %s: %v", rootREADME, kubernetesManifest, err)
	}
}

func TestCheckDockerfile(t *testing.T) {
	shipped := readFile(t, dockerfilePath)
	for _, tt := range []struct {
		name     string
		old, new string
		wantErr  string // "" for none
	}{
		{name: "as shipped"},
		{name: "shell-form entrypoint", old: `ENTRYPOINT ["/usr/local/bin/drainkit-demo"]`, new: `ENTRYPOINT /usr/local/bin/drainkit-demo`, wantErr: "shell form"},
		{name: "shell-form command", old: `CMD ["-addr=0.0.0.0:50051", "-db=/data/demo.db", "-log=json", "-grace=2s", "-cancel-grace=500ms", "-force-wait=500ms"]`, new: `CMD -addr=0.0.0.0:50051`, wantErr: "CMD -addr=0.0.0.0:50051 is in shell form"},
		{name: "default grace period", old: `, "-grace=2s"`, new: "", wantErr: "docker stop's default timeout is 10s: the drain may take 18s"},
		{name: "drain beyond docker stop", old: `"-cancel-grace=500ms"`, new: `"-cancel-grace=3s"`, wantErr: "docker stop's default timeout is 10s: the drain may take 7.5s"},
		{name: "readiness delay", old: `"-log=json"`, new: `"-log=json", "-readiness-delay=1s"`, wantErr: "the drain may take 6s"},
		{name: "root user", old: "USER 65532:65532", new: "USER 0", wantErr: "would run as root"},
		{name: "user by name", old: "USER 65532:65532", new: "USER nonroot", wantErr: "want a numeric user"},
		{name: "no user", old: "USER 65532:65532", new: "", wantErr: "no USER"},
		{name: "single stage", old: "FROM gcr.io/distroless/static-debian13:nonroot", new: "", wantErr: "one stage"},
		{name: "cgo", old: "CGO_ENABLED=0 GOOS", new: "CGO_ENABLED=1 GOOS", wantErr: "no RUN with CGO_ENABLED=0"},
		{name: "another command built", old: "./examples/server\n", new: "./examples/client\n", wantErr: "no RUN with CGO_ENABLED=0 go build ... ./examples/server"},
		{name: "entrypoint not copied", old: `ENTRYPOINT ["/usr/local/bin/drainkit-demo"]`, new: `ENTRYPOINT ["/drainkit-demo"]`, wantErr: "ENTRYPOINT runs /drainkit-demo, which no COPY"},
		{name: "runtime with a distribution", old: "gcr.io/distroless/static-debian13:nonroot", new: "debian:13", wantErr: "runtime image debian:13"},
		{name: "runtime scratch", old: "gcr.io/distroless/static-debian13:nonroot", new: "scratch"},
		{name: "bad flags", old: `"-log=json"`, new: `"-log=xml"`, wantErr: `-log "xml"`},
		{name: "database elsewhere", old: `"-db=/data/demo.db"`, new: `"-db=/var/demo.db"`, wantErr: "-db /var/demo.db: no COPY --chown=65532"},
		{name: "data owned by root", old: "--chown=65532:65532 /out/data", new: "/out/data", wantErr: "no COPY --chown=65532"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			content := shipped
			if tt.old != "" {
				content = edit(t, shipped, tt.old, tt.new)
			}
			_, err := checkDockerfile(content)
			checkError(t, "checkDockerfile()", err, tt.wantErr)
		})
	}
}

func TestCheckImage(t *testing.T) {
	shippedReadme, shippedManifest := readFile(t, rootREADME), readFile(t, kubernetesManifest)
	m := dockerBuild.FindSubmatch(shippedReadme)
	if m == nil {
		t.Fatalf("%s: no line %q", rootREADME, dockerBuild)
	}
	tag := string(m[1])
	for _, tt := range []struct {
		name     string
		readme   func([]byte) []byte
		manifest func([]byte) []byte
		wantErr  string // "" for none
	}{
		{name: "as shipped"},
		{
			name: "another image",
			manifest: func(b []byte) []byte {
				return edit(t, b, "image: "+tag, "image: ghcr.io/drainkit/drainkit-demo:latest")
			},
			wantErr: "runs image ghcr.io/drainkit/drainkit-demo:latest, the README builds " + tag,
		},
		{
			name:    "latest",
			readme:  func(b []byte) []byte { return edit(t, b, "-t "+tag+" .", "-t drainkit-demo .") },
			wantErr: "image tag drainkit-demo: want a tag other than latest",
		},
		{
			name:    "no build command",
			readme:  func(b []byte) []byte { return edit(t, b, "docker build -f", "docker buildx -f") },
			wantErr: "the README has no line",
		},
		{
			name: "pull policy Always",
			manifest: func(b []byte) []byte {
				return edit(t, b, "image: "+tag+"\n", "image: "+tag+"\n          imagePullPolicy: Always\n")
			},
			wantErr: "imagePullPolicy Always",
		},
		{
			name:     "database off the volume",
			manifest: func(b []byte) []byte { return edit(t, b, "-db=/data/demo.db", "-db=/tmp/demo.db") },
			wantErr:  "-db /tmp/demo.db is on no volume",
		},
		{
			name:     "database in a subdirectory of the volume",
			manifest: func(b []byte) []byte { return edit(t, b, "-db=/data/demo.db", "-db=/data/demo/demo.db") },
		},
		{
			name:     "database beside the volume",
			manifest: func(b []byte) []byte { return edit(t, b, "-db=/data/demo.db", "-db=/database/demo.db") },
			wantErr:  "is on no volume",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, m := shippedReadme, shippedManifest
			if tt.readme != nil {
				r = tt.readme(r)
			}
			if tt.manifest != nil {
				m = tt.manifest(m)
			}
			checkError(t, "checkImage()", checkImage(r, m), tt.wantErr)
		})
	}
}

// dockerRunStopTimeout matches a docker run command with a stop timeout and
// flags for the server on its continuation line.
var dockerRunStopTimeout = regexp.MustCompile(`docker run .*--stop-timeout (\d+) .*drainkit-demo:dev \\\n[ #]*(.*)\n`)

// TestDockerRunStopTimeout checks the docker run commands of the README and
// the Dockerfile that give the server flags of their own: their stop
// timeout must cover the drain of those flags with the margin.
func TestDockerRunStopTimeout(t *testing.T) {
	for _, file := range []string{rootREADME, dockerfilePath} {
		m := dockerRunStopTimeout.FindSubmatch(readFile(t, file))
		if m == nil {
			t.Errorf("%s: no docker run --stop-timeout with flags of the server", file)
			continue
		}
		seconds, _ := strconv.Atoi(string(m[1]))
		args := strings.Fields(string(m[2]))
		budget, _, err := drainBudget(args, false)
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		if err := checkLimit("docker run --stop-timeout", time.Duration(seconds)*time.Second, budget); err != nil {
			t.Errorf("%s: %v", file, err)
		}
	}
}
