package auth

import (
	"net/http"
	"strings"
	"testing"
)

// Micro-benchmarks of the per-attempt credential work on the worker's path.
// They assert nothing about speed; `make bench` runs them.

func benchRequest(b *testing.B) *http.Request {
	b.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://api.example.com/v1/things?since=364", nil)
	if err != nil {
		b.Fatal(err)
	}
	return req
}

func BenchmarkSpecApply(b *testing.B) {
	b.Run("bearer", func(b *testing.B) {
		spec := &Spec{Type: TypeBearer}
		secrets := Secrets{FieldToken: "ghp_16C7e42F292c6912E7710c838347Ae178B4a"}
		req := benchRequest(b)
		b.ReportAllocs()
		for b.Loop() {
			if err := spec.Apply(req, secrets); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("headers", func(b *testing.B) { // Datadog: three templated headers
		spec := &Spec{Type: TypeHeaders, Headers: map[string]string{
			"DD-API-KEY":         "{{api_key}}",
			"DD-APPLICATION-KEY": "{{app_key}}",
			"Authorization":      "Bearer {{pat}}",
		}}
		secrets := Secrets{
			"api_key": "0123456789abcdef0123456789abcdef",
			"app_key": "0123456789abcdef0123456789abcdef01234567",
			"pat":     "ddpat_0123456789abcdef0123456789abcdef",
		}
		req := benchRequest(b)
		b.ReportAllocs()
		for b.Loop() {
			if err := spec.Apply(req, secrets); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRedactorBytes redacts response bodies the size of a small API
// answer and of the default response limit: clean, with one secret echoed,
// and with no secrets at all (which must cost nothing).
func BenchmarkRedactorBytes(b *testing.B) {
	secrets := Secrets{
		"api_key": "0123456789abcdef0123456789abcdef",
		"app_key": "0123456789abcdef0123456789abcdef01234567",
		"pat":     "ddpat_0123456789abcdef0123456789abcdef",
	}
	r := NewSecretsRedactor(&Spec{Type: TypeHeaders, Headers: map[string]string{"X-Key": "{{api_key}}"}}, secrets)
	for _, size := range []struct {
		name string
		n    int
	}{{"1KiB", 1 << 10}, {"1MiB", 1 << 20}} {
		var sb strings.Builder
		sb.WriteString(`{"items":[`)
		const item = `{"id":1234567,"name":"widget","owner":"acme","url":"https:\/\/x.example\/w?q=a%20b"}`
		for i := 0; sb.Len()+len(item)+3 < size.n; i++ {
			if i > 0 {
				sb.WriteString(",")
			}
			sb.WriteString(item)
		}
		clean := sb.String() + `]}`
		clean += strings.Repeat(" ", size.n-len(clean))
		// The same size with one secret echoed back, the case that rewrites.
		leaky := `{"echo":"` + secrets["pat"] + `",` + clean[1:len(clean)-len(secrets["pat"])-10]

		for _, tc := range []struct {
			name string
			r    *Redactor
			body string
		}{{"clean", r, clean}, {"one_secret", r, leaky}, {"no_secrets", NewRedactor(), clean}} {
			b.Run(size.name+"_"+tc.name, func(b *testing.B) {
				body := []byte(tc.body)
				b.ReportAllocs()
				b.SetBytes(int64(len(body)))
				for b.Loop() {
					_ = tc.r.Bytes(body)
				}
			})
		}
	}
}

func BenchmarkKeyringOpen(b *testing.B) {
	key, err := GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	ring, err := ParseKeyring("k1:" + key)
	if err != nil {
		b.Fatal(err)
	}
	aad := fieldAAD("acme", "github-default", FieldToken)
	sealed, err := ring.Seal([]byte("ghp_16C7e42F292c6912E7710c838347Ae178B4a"), aad)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ring.Open(sealed, aad); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewSecretsRedactor is the per-attempt cost of a redactor: built
// for the attempt's credential, then run over a short response.
func BenchmarkNewSecretsRedactor(b *testing.B) {
	spec := &Spec{Type: TypeBearer}
	secrets := Secrets{FieldToken: "ghp_16C7e42F292c6912E7710c838347Ae178B4a"}
	body := []byte(strings.Repeat(`{"id":1234567,"name":"widget"}`, 34))
	b.ReportAllocs()
	for b.Loop() {
		_ = NewSecretsRedactor(spec, secrets).Bytes(body)
	}
}
