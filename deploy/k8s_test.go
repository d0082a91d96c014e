// Package deploy_test checks the Kubernetes base in deploy/k8s: rendered with
// kustomize's Go API (as `kubectl apply -k deploy/k8s` renders it), every
// object decoded strictly into the Kubernetes API's types, then what callq
// needs of them. Its dependencies (kustomize, k8s.io/api) are this test's
// only: the callq binary links none of them (cmd/callq/deps_test.go).
//
// What this cannot check is the cluster side: admission, scheduling, the
// probes answering. cmd/callq's process tests run the same commands and
// environment as processes, and the README says how to check the rest.
package deploy_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

const (
	k8sDir    = "k8s"
	namespace = "callq"
	nonroot   = 65532 // distroless's nonroot user
)

// testSecretEnv is a secret.env as secret.env.example says to make it, with
// a REDIS_URL.
func testSecretEnv(t *testing.T) []byte {
	t.Helper()
	example, err := os.ReadFile(filepath.Join(k8sDir, "secret.env.example"))
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "secret.env.example"), example, 0o644))
	script := commentedCommand(t, string(example), "Make it")
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "secret.env.example's command:\n%s\n%s", script, out)
	made, err := os.ReadFile(filepath.Join(dir, "secret.env"))
	require.NoError(t, err, "secret.env.example's command made no secret.env")
	fi, err := os.Stat(filepath.Join(dir, "secret.env"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "secret.env is for its owner only")
	return bytes.Replace(made, []byte("\nREDIS_URL=\n"), []byte("\nREDIS_URL=redis://:pw@redis.example:6379/0\n"), 1)
}

// commentedCommand is the shell command a file's comment shows after the
// line holding marker: the first run of comment lines indented by three
// spaces.
func commentedCommand(t *testing.T, file, marker string) string {
	t.Helper()
	var lines []string
	found := false
	for l := range strings.SplitSeq(file, "\n") {
		found = found || strings.HasPrefix(l, "#") && strings.Contains(l, marker)
		if !found {
			continue
		}
		if cmd, ok := strings.CutPrefix(l, "#   "); ok {
			lines = append(lines, cmd)
		} else if len(lines) > 0 {
			break
		}
	}
	require.NotEmpty(t, lines, "no command after %q", marker)
	return strings.Join(lines, "\n")
}

// The README's Kubernetes steps make secret.env with the command
// secret.env.example shows, which testSecretEnv runs.
func TestK8sReadmeMakesSecretEnvAsTested(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	require.NoError(t, err)
	example, err := os.ReadFile(filepath.Join(k8sDir, "secret.env.example"))
	require.NoError(t, err)
	norm := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	require.Contains(t, norm(string(readme)), norm(commentedCommand(t, string(example), "Make it")))
	require.Contains(t, string(readme), "kubectl apply -k")
}

// render runs kustomize on a copy of deploy/k8s in memory, with secretEnv as
// its secret.env (none when nil), and edit applied to each file's content.
func render(t *testing.T, secretEnv []byte, edit func(name string, b []byte) []byte) ([]byte, error) {
	t.Helper()
	fs := filesys.MakeFsInMemory()
	entries, err := os.ReadDir(k8sDir)
	require.NoError(t, err)
	for _, e := range entries {
		if e.IsDir() || e.Name() == "secret.env" {
			continue // a developer's real secret.env stays out
		}
		b, err := os.ReadFile(filepath.Join(k8sDir, e.Name()))
		require.NoError(t, err)
		if edit != nil {
			b = edit(e.Name(), b)
		}
		require.NoError(t, fs.WriteFile("/k8s/"+e.Name(), b))
	}
	if secretEnv != nil {
		require.NoError(t, fs.WriteFile("/k8s/secret.env", secretEnv))
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, "/k8s")
	if err != nil {
		return nil, err
	}
	return m.AsYaml()
}

// decodeStrict decodes every document of a multi-document YAML into the
// Kubernetes API's types: an unknown or misspelt field, a duplicate field or
// a kind outside core/v1, apps/v1 and policy/v1 is an error.
func decodeStrict(yml []byte) ([]runtime.Object, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	dec := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	var objs []runtime.Object
	for i, doc := range bytes.Split(yml, []byte("\n---\n")) {
		obj, gvk, err := dec.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d (%v): %w", i+1, gvk, err)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// base is the rendered deploy/k8s, by kind.
type base struct {
	ns          *corev1.Namespace
	configMap   *corev1.ConfigMap
	secret      *corev1.Secret
	api, worker *appsv1.Deployment
	service     *corev1.Service
	apiPDB      *policyv1.PodDisruptionBudget
	workerPDB   *policyv1.PodDisruptionBudget
}

func renderBase(t *testing.T) *base {
	t.Helper()
	yml, err := render(t, testSecretEnv(t), nil)
	require.NoError(t, err)
	objs, err := decodeStrict(yml)
	require.NoError(t, err, "%s", yml)
	b := &base{}
	var names []string
	for _, o := range objs {
		m, err := metaOf(o)
		require.NoError(t, err)
		names = append(names, fmt.Sprintf("%T %s", o, m.GetName()))
		if _, ok := o.(*corev1.Namespace); !ok {
			require.Equal(t, namespace, m.GetNamespace(), "%T %s", o, m.GetName())
		}
		switch o := o.(type) {
		case *corev1.Namespace:
			b.ns = o
		case *corev1.ConfigMap:
			b.configMap = o
		case *corev1.Secret:
			b.secret = o
		case *corev1.Service:
			b.service = o
		case *appsv1.Deployment:
			switch o.Name {
			case "callq-api":
				b.api = o
			case "callq-worker":
				b.worker = o
			}
		case *policyv1.PodDisruptionBudget:
			switch o.Name {
			case "callq-api":
				b.apiPDB = o
			case "callq-worker":
				b.workerPDB = o
			}
		}
	}
	require.Len(t, objs, 8, "the base's objects: %v", names)
	for what, o := range map[string]any{"namespace": b.ns, "configmap": b.configMap, "secret": b.secret,
		"api": b.api, "worker": b.worker, "service": b.service, "api pdb": b.apiPDB, "worker pdb": b.workerPDB} {
		require.NotNil(t, o, "no %s among %v", what, names)
	}
	return b
}

func metaOf(o runtime.Object) (metav1.Object, error) {
	m, ok := o.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object meta", o)
	}
	return m, nil
}

func TestK8sBase(t *testing.T) {
	t.Parallel()
	b := renderBase(t)

	require.Equal(t, namespace, b.ns.Name)
	require.Equal(t, "restricted", b.ns.Labels["pod-security.kubernetes.io/enforce"])

	// The catalog is one callq accepts; the generated names (with their
	// content hash) are the ones the pods refer to.
	require.True(t, strings.HasPrefix(b.configMap.Name, "callq-catalog-"), b.configMap.Name)
	catalog, ok := b.configMap.Data["integrations.yaml"]
	require.True(t, ok, "the ConfigMap has no integrations.yaml: %v", b.configMap.Data)
	_, err := tasks.ParseCatalog([]byte(catalog))
	require.NoError(t, err, "the ConfigMap's catalog")

	require.True(t, strings.HasPrefix(b.secret.Name, "callq-secrets-"), b.secret.Name)
	secret := map[string]string{}
	for k, v := range b.secret.Data {
		secret[k] = string(v)
	}
	require.ElementsMatch(t, []string{"REDIS_URL", "CALLQ_SECRET_KEY", "CALLQ_WEBHOOK_SECRET"}, keysOf(secret))
	_, err = auth.ParseKeyring(secret["CALLQ_SECRET_KEY"])
	require.NoError(t, err, "secret.env.example's command makes a CALLQ_SECRET_KEY callq takes")
	_, err = auth.ParseWebhookSecrets(secret["CALLQ_WEBHOOK_SECRET"])
	require.NoError(t, err, "secret.env.example's command makes a CALLQ_WEBHOOK_SECRET callq takes")

	apiPod := checkDeployment(t, b, b.api, "api", "CALLQ_API_ADDR")
	workerPod := checkDeployment(t, b, b.worker, "worker", "CALLQ_METRICS_ADDR")

	// Grace periods: above the drain, or the kubelet's SIGKILL cuts it.
	drain := worker.DefaultShutdownTimeout
	if v := envOf(&b.worker.Spec.Template.Spec.Containers[0], "CALLQ_SHUTDOWN_TIMEOUT"); v != "" {
		drain, err = time.ParseDuration(v)
		require.NoError(t, err, "the worker's CALLQ_SHUTDOWN_TIMEOUT")
	}
	workerGrace := time.Duration(*b.worker.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	require.Greater(t, workerGrace, drain+5*time.Second,
		"the worker's terminationGracePeriodSeconds must exceed CALLQ_SHUTDOWN_TIMEOUT (%s) and the 5s the worker may take after it", drain)
	api := &b.api.Spec.Template.Spec
	preStop := time.Duration(0)
	if l := api.Containers[0].Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
	}
	require.Positive(t, preStop, "the API sleeps before it stops, while the Service forgets it")
	apiGrace := time.Duration(*api.TerminationGracePeriodSeconds) * time.Second
	require.Greater(t, apiGrace, preStop+producer.DefaultMaxWait+5*time.Second,
		"the API's grace period must cover its preStop sleep and its shutdown (long polls of up to %s, then 5s)", producer.DefaultMaxWait)

	// The Service sends to the API's pods, on a port they have.
	sel := labels.SelectorFromSet(b.service.Spec.Selector)
	require.True(t, sel.Matches(labels.Set(apiPod.Labels)), "the Service selects the API's pods")
	require.False(t, sel.Matches(labels.Set(workerPod.Labels)), "the Service must not select workers")
	require.Len(t, b.service.Spec.Ports, 1)
	require.Equal(t, "http", b.service.Spec.Ports[0].TargetPort.String())
	require.True(t, hasPort(&apiPod.Spec.Containers[0], b.service.Spec.Ports[0].TargetPort.String()))

	// Each PDB covers its own pods and no others, and lets one go at a time.
	for _, tc := range []struct {
		pdb         *policyv1.PodDisruptionBudget
		own, others *corev1.PodTemplateSpec
		replicas    int32
	}{
		{b.apiPDB, apiPod, workerPod, *b.api.Spec.Replicas},
		{b.workerPDB, workerPod, apiPod, *b.worker.Spec.Replicas},
	} {
		s, err := metav1.LabelSelectorAsSelector(tc.pdb.Spec.Selector)
		require.NoError(t, err)
		require.True(t, s.Matches(labels.Set(tc.own.Labels)), "PDB %s selects its pods", tc.pdb.Name)
		require.False(t, s.Matches(labels.Set(tc.others.Labels)), "PDB %s selects only its pods", tc.pdb.Name)
		require.True(t, (tc.pdb.Spec.MinAvailable == nil) != (tc.pdb.Spec.MaxUnavailable == nil), "PDB %s: one of minAvailable and maxUnavailable", tc.pdb.Name)
		if m := tc.pdb.Spec.MinAvailable; m != nil {
			require.Less(t, m.IntVal, tc.replicas, "PDB %s: minAvailable below the replicas, or no node drains", tc.pdb.Name)
		}
		require.GreaterOrEqual(t, tc.replicas, int32(2), "%s: two replicas, so a disruption leaves one", tc.pdb.Name)
	}
}

// checkDeployment checks what every callq Deployment must have and returns
// its pod template. addrEnv names the variable whose port the probes and
// the scrape annotations use.
func checkDeployment(t *testing.T, b *base, d *appsv1.Deployment, command, addrEnv string) *corev1.PodTemplateSpec {
	t.Helper()
	pod := &d.Spec.Template
	spec := &pod.Spec
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	require.NoError(t, err)
	require.True(t, sel.Matches(labels.Set(pod.Labels)), "%s: the selector matches the pod template", d.Name)

	// The restricted Pod Security Standard, and then some.
	psc := spec.SecurityContext
	require.NotNil(t, psc, d.Name)
	require.Equal(t, ptr(true), psc.RunAsNonRoot, "%s: runAsNonRoot", d.Name)
	require.Equal(t, ptr(int64(nonroot)), psc.RunAsUser, "%s: runAsUser is distroless's nonroot, as a number the kubelet can check", d.Name)
	require.NotNil(t, psc.SeccompProfile, d.Name)
	require.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, psc.SeccompProfile.Type, d.Name)
	require.Equal(t, ptr(false), spec.AutomountServiceAccountToken, "%s: callq never talks to the Kubernetes API", d.Name)
	require.NotNil(t, spec.TerminationGracePeriodSeconds, d.Name)

	require.Len(t, spec.Containers, 1, d.Name)
	c := &spec.Containers[0]
	require.Equal(t, "callq:dev", c.Image, "%s: the image kustomization.yaml names", d.Name)
	require.Empty(t, c.Command, "%s: the image's ENTRYPOINT is /callq", d.Name)
	require.Equal(t, []string{command}, c.Args, d.Name)
	sc := c.SecurityContext
	require.NotNil(t, sc, d.Name)
	require.Equal(t, ptr(false), sc.AllowPrivilegeEscalation, "%s", d.Name)
	require.Equal(t, ptr(true), sc.ReadOnlyRootFilesystem, "%s", d.Name)
	require.NotNil(t, sc.Capabilities, d.Name)
	require.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop, d.Name)
	require.Empty(t, sc.Capabilities.Add, d.Name)
	require.Nil(t, sc.Privileged, d.Name)

	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, ok := c.Resources.Requests[r]
		require.True(t, ok, "%s: a %s request", d.Name, r)
		lim, ok := c.Resources.Limits[r]
		require.True(t, ok, "%s: a %s limit", d.Name, r)
		require.LessOrEqual(t, req.Cmp(lim), 0, "%s: the %s request is within the limit", d.Name, r)
	}

	// The catalog: mounted from the generated ConfigMap, where
	// CALLQ_INTEGRATIONS looks.
	require.Len(t, spec.Volumes, 1, d.Name)
	v := spec.Volumes[0]
	require.NotNil(t, v.ConfigMap, d.Name)
	require.Equal(t, b.configMap.Name, v.ConfigMap.Name, "%s mounts the generated ConfigMap", d.Name)
	require.Len(t, c.VolumeMounts, 1, d.Name)
	require.Equal(t, v.Name, c.VolumeMounts[0].Name)
	require.True(t, c.VolumeMounts[0].ReadOnly, d.Name)
	require.Equal(t, c.VolumeMounts[0].MountPath+"/integrations.yaml", envOf(c, "CALLQ_INTEGRATIONS"), d.Name)
	// The secrets: every key of the generated Secret.
	require.Len(t, c.EnvFrom, 1, d.Name)
	require.NotNil(t, c.EnvFrom[0].SecretRef, d.Name)
	require.Equal(t, b.secret.Name, c.EnvFrom[0].SecretRef.Name, "%s reads the generated Secret", d.Name)
	for _, e := range c.Env {
		require.False(t, e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil, "%s: secrets come from envFrom", d.Name)
		require.NotContains(t, []string{"CALLQ_SECRET_KEY", "REDIS_URL", "CALLQ_WEBHOOK_SECRET"}, e.Name, "%s: a secret in plain env", d.Name)
	}

	// Probes: HTTP on the port callq listens on.
	addr := envOf(c, addrEnv)
	require.NotEmpty(t, addr, "%s: %s", d.Name, addrEnv)
	_, portStr, err := net.SplitHostPort(addr)
	require.NoError(t, err, "%s: %s=%q", d.Name, addrEnv, addr)
	port, err := strconv.Atoi(portStr)
	require.NoError(t, err)
	for what, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		require.NotNil(t, p, "%s: a %s probe", d.Name, what)
		require.NotNil(t, p.HTTPGet, "%s: an HTTP %s probe", d.Name, what)
		require.Equal(t, int32(port), portNumber(t, c, p.HTTPGet.Port.String()), "%s: the %s probe's port is %s's", d.Name, what, addrEnv)
		require.Positive(t, p.TimeoutSeconds, d.Name)
	}
	require.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path, d.Name)
	// Liveness must not depend on Redis: an outage would restart every pod.
	require.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path, d.Name)

	// Prometheus scrapes /metrics on that port.
	a := pod.Annotations
	require.Equal(t, "true", a["prometheus.io/scrape"], d.Name)
	require.Equal(t, portStr, a["prometheus.io/port"], d.Name)
	require.Equal(t, "/metrics", a["prometheus.io/path"], d.Name)
	return pod
}

func ptr[T any](v T) *T { return &v }

func keysOf(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func envOf(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func hasPort(c *corev1.Container, name string) bool {
	return slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == name })
}

// portNumber resolves a probe's port, a name or a number, on c.
func portNumber(t *testing.T, c *corev1.Container, port string) int32 {
	t.Helper()
	if n, err := strconv.Atoi(port); err == nil {
		return int32(n)
	}
	for _, p := range c.Ports {
		if p.Name == port {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %q", c.Name, port)
	return 0
}

// The strict decoding refuses a misspelt field wherever it is, so the
// checks above read the manifests as a cluster would: a typo cannot go
// unseen (a lenient decoder would drop readinesProbe and the pod would have
// no probe).
func TestK8sStrictDecodingRefusesTypos(t *testing.T) {
	t.Parallel()
	secretEnv := testSecretEnv(t)
	for _, tc := range []struct{ file, from, to, want string }{
		{"api.yaml", "readinessProbe:", "readinesProbe:", `unknown field "spec.template.spec.containers[0].readinesProbe"`},
		{"worker.yaml", "runAsNonRoot: true", "runAsNonroot: true", `unknown field "spec.template.spec.securityContext.runAsNonroot"`},
		{"api.yaml", "  minAvailable: 1", "  minAvailable: 1\n  minAvailable: 1", `"minAvailable"`},
	} {
		yml, err := render(t, secretEnv, func(name string, b []byte) []byte {
			if name != tc.file {
				return b
			}
			require.Contains(t, string(b), tc.from)
			return bytes.Replace(b, []byte(tc.from), []byte(tc.to), 1)
		})
		if err == nil {
			_, err = decodeStrict(yml)
		}
		require.Error(t, err, "%s with %q", tc.file, tc.to)
		t.Logf("%s with %q: %v", tc.file, tc.to, err)
		require.Contains(t, err.Error(), tc.want, "%s with %q", tc.file, tc.to)
	}

	// Unedited, the same path decodes: the errors above are the typos'.
	yml, err := render(t, secretEnv, nil)
	require.NoError(t, err)
	_, err = decodeStrict(yml)
	require.NoError(t, err)
}

// Without secret.env, kubectl apply -k fails, naming the file, rather than
// deploying without a secret key.
func TestK8sNeedsSecretEnv(t *testing.T) {
	t.Parallel()
	_, err := render(t, nil, nil)
	require.Error(t, err)
	require.Contains(t, err.Error(), "secret.env")
}
