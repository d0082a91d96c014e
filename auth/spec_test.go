package auth

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

func newRequest(t *testing.T, rawURL string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	require.NoError(t, err)
	return req
}

func datadogSpec() *Spec {
	return &Spec{Type: TypeHeaders, Headers: map[string]string{
		"DD-API-KEY":         "{{api_key}}",
		"DD-APPLICATION-KEY": "{{app_key}}",
		"Authorization":      "Bearer {{pat}}",
	}}
}

func TestSpecApply(t *testing.T) {
	t.Parallel()

	t.Run("None", func(t *testing.T) {
		t.Parallel()
		for _, spec := range []*Spec{{Type: TypeNone}, {}, nil} {
			req := newRequest(t, "https://api.example/x?a=1")
			require.NoError(t, spec.Apply(req, Secrets{"token": "t0ken-value"}))
			require.Empty(t, req.Header)
			require.Equal(t, "a=1", req.URL.RawQuery)
		}
	})

	t.Run("Bearer", func(t *testing.T) {
		t.Parallel()
		req := newRequest(t, "https://api.github.com/repositories")
		require.NoError(t, (&Spec{Type: TypeBearer}).Apply(req, Secrets{"token": "ghp_abc"}))
		require.Equal(t, "Bearer ghp_abc", req.Header.Get("Authorization"))
	})

	t.Run("APIKeyHeaderDefault", func(t *testing.T) {
		t.Parallel()
		req := newRequest(t, "https://partner.example/x")
		require.NoError(t, (&Spec{Type: TypeAPIKey}).Apply(req, Secrets{"key": "k-123"}))
		require.Equal(t, "k-123", req.Header.Get("X-API-Key"))
	})

	t.Run("APIKeyHeaderNamed", func(t *testing.T) {
		t.Parallel()
		req := newRequest(t, "https://partner.example/x")
		spec := &Spec{Type: TypeAPIKey, In: InHeader, Name: "x-api-key"}
		require.NoError(t, spec.Apply(req, Secrets{"key": "k-123"}))
		require.Equal(t, http.Header{"X-Api-Key": {"k-123"}}, req.Header)
	})

	t.Run("APIKeyQuery", func(t *testing.T) {
		t.Parallel()
		req := newRequest(t, "https://partner.example/x?z=1&since=364&b=a%20b&api_key=stale")
		spec := &Spec{Type: TypeAPIKey, In: InQuery, Name: "api_key"}
		require.NoError(t, spec.Apply(req, Secrets{"key": "k+1/2=="}))
		require.Empty(t, req.Header)
		// Others kept as they were, in order; the key escaped and replacing
		// any value the caller gave.
		require.Equal(t, "z=1&since=364&b=a%20b&api_key=k%2B1%2F2%3D%3D", req.URL.RawQuery)
		require.Equal(t, "k+1/2==", req.URL.Query().Get("api_key"))
		require.Equal(t, "https://partner.example/x?z=1&since=364&b=a%20b&api_key=k%2B1%2F2%3D%3D", req.URL.String())
	})

	t.Run("APIKeyQueryNoOtherParams", func(t *testing.T) {
		t.Parallel()
		req := newRequest(t, "https://partner.example/x")
		spec := &Spec{Type: TypeAPIKey, In: InQuery, Name: "key"}
		require.NoError(t, spec.Apply(req, Secrets{"key": "abc"}))
		require.Equal(t, "https://partner.example/x?key=abc", req.URL.String())
	})

	t.Run("Basic", func(t *testing.T) {
		t.Parallel()
		req := newRequest(t, "https://api.stripe.com/v1/charges")
		require.NoError(t, (&Spec{Type: TypeBasic}).Apply(req, Secrets{"username": "sk_test", "password": "pw:x"}))
		user, pass, ok := req.BasicAuth()
		require.True(t, ok)
		require.Equal(t, "sk_test", user)
		require.Equal(t, "pw:x", pass)
	})

	t.Run("BasicWithoutPassword", func(t *testing.T) {
		t.Parallel()
		// Stripe: the secret key is the username, the password empty.
		req := newRequest(t, "https://api.stripe.com/v1/charges")
		require.NoError(t, (&Spec{Type: TypeBasic}).Apply(req, Secrets{"username": "sk_test_123"}))
		user, pass, ok := req.BasicAuth()
		require.True(t, ok)
		require.Equal(t, "sk_test_123", user)
		require.Empty(t, pass)
	})

	t.Run("HeadersDatadogWithPAT", func(t *testing.T) {
		t.Parallel()
		req := newRequest(t, "https://api.datadoghq.com/api/v1/validate")
		err := datadogSpec().Apply(req, Secrets{"api_key": "dd-api", "app_key": "dd-app", "pat": "dd-pat"})
		require.NoError(t, err)
		require.Equal(t, http.Header{
			"Dd-Api-Key":         {"dd-api"},
			"Dd-Application-Key": {"dd-app"},
			"Authorization":      {"Bearer dd-pat"},
		}, req.Header)
	})

	t.Run("HeadersDatadogWithoutPAT", func(t *testing.T) {
		t.Parallel()
		for _, secrets := range []Secrets{
			{"api_key": "dd-api", "app_key": "dd-app"},
			{"api_key": "dd-api", "app_key": "dd-app", "pat": ""},
		} {
			req := newRequest(t, "https://api.datadoghq.com/api/v1/validate")
			require.NoError(t, datadogSpec().Apply(req, secrets))
			require.Equal(t, http.Header{
				"Dd-Api-Key":         {"dd-api"},
				"Dd-Application-Key": {"dd-app"},
			}, req.Header)
		}
	})

	t.Run("HeadersSeveralFieldsAndStaticText", func(t *testing.T) {
		t.Parallel()
		spec := &Spec{Type: TypeHeaders, Headers: map[string]string{
			"X-Auth":   "{{user}}:{{pass}};v=1",
			"X-Static": "on",
		}}
		req := newRequest(t, "https://x.example/")
		require.NoError(t, spec.Apply(req, Secrets{"user": "u", "pass": "p"}))
		require.Equal(t, "u:p;v=1", req.Header.Get("X-Auth"))
		require.Equal(t, "on", req.Header.Get("X-Static"))

		req = newRequest(t, "https://x.example/")
		require.NoError(t, spec.Apply(req, Secrets{"user": "u"}))
		require.Empty(t, req.Header.Values("X-Auth"))
	})

	t.Run("NilHeaderMap", func(t *testing.T) {
		t.Parallel()
		req := &http.Request{}
		require.NoError(t, (&Spec{Type: TypeBearer}).Apply(req, Secrets{"token": "t"}))
		require.Equal(t, "Bearer t", req.Header.Get("Authorization"))
	})

	missing := []struct {
		name    string
		spec    *Spec
		secrets Secrets
		field   string
		message string
	}{
		{"BearerNoToken", &Spec{Type: TypeBearer}, Secrets{"key": "s3cret-value"}, "token",
			`credential has no field "token" required by auth type bearer`},
		{"BearerEmptyToken", &Spec{Type: TypeBearer}, Secrets{"token": ""}, "token",
			`credential has no field "token" required by auth type bearer`},
		{"APIKeyHeader", &Spec{Type: TypeAPIKey}, Secrets{"token": "s3cret-value"}, "key",
			`credential has no field "key" required by auth type api_key`},
		{"APIKeyQuery", &Spec{Type: TypeAPIKey, In: InQuery, Name: "k"}, nil, "key",
			`credential has no field "key" required by auth type api_key`},
		{"BasicNoUsername", &Spec{Type: TypeBasic}, Secrets{"password": "s3cret-value"}, "username",
			`credential has no field "username" required by auth type basic`},
	}
	for _, tc := range missing {
		t.Run("Missing"+tc.name, func(t *testing.T) {
			t.Parallel()
			req := newRequest(t, "https://x.example/?a=1")
			err := tc.spec.Apply(req, tc.secrets)
			var mfe *MissingFieldError
			require.ErrorAs(t, err, &mfe)
			require.Equal(t, tc.field, mfe.Field)
			require.EqualError(t, err, tc.message)
			require.NotContains(t, err.Error(), "s3cret-value")
			require.Empty(t, req.Header)
			require.Equal(t, "a=1", req.URL.RawQuery)
		})
	}

	t.Run("HeaderInjectionRefused", func(t *testing.T) {
		t.Parallel()
		evil := "s3cret\r\nX-Evil: 1"
		for _, tc := range []struct {
			spec    *Spec
			secrets Secrets
		}{
			{&Spec{Type: TypeBearer}, Secrets{"token": evil}},
			{&Spec{Type: TypeAPIKey}, Secrets{"key": evil}},
			{datadogSpec(), Secrets{"api_key": evil, "app_key": "a"}},
		} {
			req := newRequest(t, "https://x.example/")
			err := tc.spec.Apply(req, tc.secrets)
			require.ErrorContains(t, err, "not allowed in an HTTP header value")
			require.NotContains(t, err.Error(), "s3cret")
		}

		// In a query parameter it is escaped, so it is fine.
		req := newRequest(t, "https://x.example/")
		require.NoError(t, (&Spec{Type: TypeAPIKey, In: InQuery, Name: "k"}).Apply(req, Secrets{"key": evil}))
		require.Equal(t, evil, req.URL.Query().Get("k"))
	})

	t.Run("UnvalidatedSpecErrors", func(t *testing.T) {
		t.Parallel()
		req := newRequest(t, "https://x.example/")
		require.ErrorContains(t, (&Spec{Type: "oauth3"}).Apply(req, nil), `auth.type: auth type "oauth3" is not known`)
		require.ErrorContains(t, (&Spec{Type: TypeAPIKey, In: "cookie"}).Apply(req, Secrets{"key": "k"}), "auth.in")
		require.ErrorContains(t, (&Spec{Type: TypeAPIKey, In: InQuery}).Apply(req, Secrets{"key": "k"}), "auth.name")
		require.ErrorContains(t, (&Spec{Type: TypeHeaders, Headers: map[string]string{"X": "{{a"}}).Apply(req, Secrets{"a": "v"}), "auth.headers.X")
		require.Error(t, (&Spec{Type: TypeBearer}).Apply(nil, Secrets{"token": "t"}))
	})
}

func TestSpecValidate(t *testing.T) {
	t.Parallel()

	valid := []*Spec{
		nil,
		{},
		{Type: TypeNone},
		{Type: TypeBearer},
		{Type: TypeBasic},
		{Type: TypeAPIKey},
		{Type: TypeAPIKey, In: InHeader, Name: "x-api-key"},
		{Type: TypeAPIKey, In: InQuery, Name: "api_key"},
		datadogSpec(),
		{Type: TypeHeaders, Headers: map[string]string{"X-Static": "literal only"}},
		{Type: TypeHeaders, Headers: map[string]string{"X-A": "{{a.b-c_9}}{{d}}"}},
	}
	for _, spec := range valid {
		require.NoError(t, spec.Validate(), "%+v", spec)
	}

	invalid := []struct {
		name  string
		spec  *Spec
		field string
		want  string
	}{
		{"UnknownType", &Spec{Type: "oauth3"}, "auth.type", `auth type "oauth3" is not known`},
		{"BadIn", &Spec{Type: TypeAPIKey, In: "cookie"}, "auth.in", `in "cookie" is not valid: want header or query`},
		{"InOnBearer", &Spec{Type: TypeBearer, In: InHeader}, "auth.in", "in applies only to auth type api_key, not bearer"},
		{"NameOnBasic", &Spec{Type: TypeBasic, Name: "x"}, "auth.name", "name applies only to auth type api_key, not basic"},
		{"HeadersOnBearer", &Spec{Type: TypeBearer, Headers: map[string]string{"X": "y"}}, "auth.headers", "headers applies only to auth type headers"},
		{"QueryWithoutName", &Spec{Type: TypeAPIKey, In: InQuery}, "auth.name", "name is required when in is query"},
		{"BadAPIKeyHeader", &Spec{Type: TypeAPIKey, Name: "X API Key"}, "auth.name", `"X API Key" is not a valid HTTP header name`},
		{"HeadersEmpty", &Spec{Type: TypeHeaders}, "auth.headers", "needs at least one header"},
		{"HeaderNameInvalid", &Spec{Type: TypeHeaders, Headers: map[string]string{"X Foo": "{{a}}"}}, "auth.headers.X Foo", "not a valid HTTP header name"},
		{"HeaderNameColon", &Spec{Type: TypeHeaders, Headers: map[string]string{"X-Foo:": "{{a}}"}}, "auth.headers.X-Foo:", "not a valid HTTP header name"},
		{"HeaderDuplicateCase", &Spec{Type: TypeHeaders, Headers: map[string]string{"X-Foo": "{{a}}", "x-foo": "{{b}}"}}, "auth.headers.x-foo", "header names are case-insensitive"},
		{"TemplateUnclosed", &Spec{Type: TypeHeaders, Headers: map[string]string{"X-Foo": "Bearer {{pat"}}, "auth.headers.X-Foo", `"{{" without a matching "}}"`},
		{"TemplateStrayClose", &Spec{Type: TypeHeaders, Headers: map[string]string{"X-Foo": "pat}}"}}, "auth.headers.X-Foo", `"}}" without a matching "{{"`},
		{"TemplateSpaces", &Spec{Type: TypeHeaders, Headers: map[string]string{"X-Foo": "{{ pat }}"}}, "auth.headers.X-Foo", "placeholder {{ pat }} is not valid"},
		{"TemplateEmptyName", &Spec{Type: TypeHeaders, Headers: map[string]string{"X-Foo": "{{}}"}}, "auth.headers.X-Foo", "placeholder {{}} is not valid"},
		{"TemplateOtherSyntax", &Spec{Type: TypeHeaders, Headers: map[string]string{"X-Foo": "{{.pat | upper}}"}}, "auth.headers.X-Foo", "is not valid"},
		{"TemplateNewline", &Spec{Type: TypeHeaders, Headers: map[string]string{"X-Foo": "a\r\nX-Evil: 1"}}, "auth.headers.X-Foo", "control character"},
	}
	for _, tc := range invalid {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.spec.Validate()
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
			require.Equal(t, tc.field, fe.Field)
			require.ErrorContains(t, err, tc.want)
			require.Contains(t, err.Error(), tc.field+": ")
		})
	}
}

func TestSpecFieldsAndSensitive(t *testing.T) {
	t.Parallel()

	cases := []struct {
		spec     *Spec
		required []string
		headers  []string
		query    []string
	}{
		{&Spec{Type: TypeNone}, nil, nil, nil},
		{&Spec{Type: TypeBearer}, []string{"token"}, []string{"Authorization"}, nil},
		{&Spec{Type: TypeBasic}, []string{"username"}, []string{"Authorization"}, nil},
		{&Spec{Type: TypeAPIKey}, []string{"key"}, []string{"X-Api-Key"}, nil},
		{&Spec{Type: TypeAPIKey, Name: "x-partner-key"}, []string{"key"}, []string{"X-Partner-Key"}, nil},
		{&Spec{Type: TypeAPIKey, In: InQuery, Name: "api_key"}, []string{"key"}, nil, []string{"api_key"}},
		{datadogSpec(), nil, []string{"Authorization", "Dd-Api-Key", "Dd-Application-Key"}, nil},
	}
	for _, tc := range cases {
		require.Equal(t, tc.required, tc.spec.RequiredFields(), "%+v", tc.spec)
		require.Equal(t, tc.headers, tc.spec.SensitiveHeaders(), "%+v", tc.spec)
		for _, h := range tc.headers {
			for _, name := range []string{h, strings.ToLower(h), strings.ToUpper(h)} {
				require.True(t, tc.spec.IsSensitiveHeader(name), "%s under %+v", name, tc.spec)
			}
		}
		for _, name := range []string{"Content-Type", "X-Api-Keys", "Authorizatio", "api_key", ""} {
			require.False(t, tc.spec.IsSensitiveHeader(name), "%s under %+v", name, tc.spec)
		}
		require.Equal(t, tc.query, tc.spec.SensitiveQuery(), "%+v", tc.spec)
	}
}

func TestSpecNeedsCredential(t *testing.T) {
	t.Parallel()

	oauth2 := func(grant string) *Spec {
		return &Spec{Type: TypeOAuth2, TokenURL: "https://auth.example.com/token", ClientID: "app", ClientSecret: "env:APP_SECRET", Grant: grant}
	}
	cases := []struct {
		name string
		spec *Spec
		want bool
	}{
		{"Nil", nil, false},
		{"ZeroType", &Spec{}, false}, // the zero Type means none
		{"None", &Spec{Type: TypeNone}, false},
		{"Bearer", &Spec{Type: TypeBearer}, true},
		{"APIKey", &Spec{Type: TypeAPIKey}, true},
		{"APIKeyInQuery", &Spec{Type: TypeAPIKey, In: InQuery, Name: "api_key"}, true},
		{"Basic", &Spec{Type: TypeBasic}, true},
		{"Headers", datadogSpec(), true}, // no required field, but its fields are the credential's
		{"OAuth2DefaultGrant", oauth2(""), true},
		{"OAuth2RefreshToken", oauth2(GrantRefreshToken), true},
		{"OAuth2ClientCredentials", oauth2(GrantClientCredentials), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.NoError(t, tc.spec.Validate())
			require.Equal(t, tc.want, tc.spec.NeedsCredential())
		})
	}
}

func TestSpecOAuth2(t *testing.T) {
	t.Parallel()

	base := func() *Spec {
		return &Spec{Type: TypeOAuth2, TokenURL: "https://login.example/oauth/token", ClientID: "cid", ClientSecret: "literal-client-secret"}
	}
	valid := []func(*Spec){
		func(*Spec) {},
		func(s *Spec) { s.ClientSecret = "" }, // a public client
		func(s *Spec) { s.ClientSecret = "env:CRM_CLIENT_SECRET" },
		func(s *Spec) { s.ClientSecret = "file:/run/secrets/crm" },
		func(s *Spec) { s.Grant = GrantRefreshToken },
		func(s *Spec) {
			s.Grant = GrantClientCredentials
			s.Scopes = []string{"read:all", "https://api.example/.default"}
		},
		func(s *Spec) { s.AuthStyle = AuthStyleHeader },
		func(s *Spec) { s.AuthStyle = AuthStyleParams },
		func(s *Spec) { s.AuthStyle = AuthStyleAuto },
		func(s *Spec) { s.TokenURL = "http://127.0.0.1:9000/token?tenant=x" },
		func(s *Spec) {
			s.AuthorizeURL = "https://login.example/oauth/authorize"
			s.AuthorizeParams = map[string]string{"access_type": "offline", "prompt": "consent"}
		},
	}
	for i, mod := range valid {
		s := base()
		mod(s)
		require.NoError(t, s.Validate(), "valid case %d", i)
	}

	invalid := []struct {
		name  string
		mod   func(*Spec)
		field string
		want  string
	}{
		{"NoTokenURL", func(s *Spec) { s.TokenURL = "" }, "auth.token_url", "token_url is required"},
		{"RelativeTokenURL", func(s *Spec) { s.TokenURL = "/oauth/token" }, "auth.token_url", "absolute http or https URL"},
		{"FTPTokenURL", func(s *Spec) { s.TokenURL = "ftp://login.example/token" }, "auth.token_url", "absolute http or https URL"},
		{"UserinfoTokenURL", func(s *Spec) { s.TokenURL = "https://u:p@login.example/token" }, "auth.token_url", "must not hold userinfo"},
		{"NoClientID", func(s *Spec) { s.ClientID = "" }, "auth.client_id", "client_id is required"},
		{"BadEnvSource", func(s *Spec) { s.ClientSecret = "env:1BAD" }, "auth.client_secret", "env var name"},
		{"RelativeFileSource", func(s *Spec) { s.ClientSecret = "file:secret.txt" }, "auth.client_secret", "not absolute"},
		{"BadGrant", func(s *Spec) { s.Grant = "password" }, "auth.grant", `grant "password" is not valid`},
		{"BadAuthStyle", func(s *Spec) { s.AuthStyle = "basic" }, "auth.auth_style", `auth_style "basic" is not valid`},
		{"EmptyScope", func(s *Spec) { s.Scopes = []string{"read", ""} }, "auth.scopes[1]", "not valid"},
		{"SpacedScope", func(s *Spec) { s.Scopes = []string{"read write"} }, "auth.scopes[0]", "not valid"},
		{"InOnOAuth2", func(s *Spec) { s.In = InHeader }, "auth.in", "in applies only to auth type api_key, not oauth2"},
		{"HeadersOnOAuth2", func(s *Spec) { s.Headers = map[string]string{"X": "y"} }, "auth.headers", "headers applies only"},
		{"TokenURLOnBearer", func(s *Spec) { *s = Spec{Type: TypeBearer, TokenURL: "https://x.example/t"} }, "auth.token_url", "token_url applies only to auth type oauth2, not bearer"},
		{"ClientSecretOnBasic", func(s *Spec) { *s = Spec{Type: TypeBasic, ClientSecret: "x"} }, "auth.client_secret", "client_secret applies only to auth type oauth2"},
		{"ScopesOnNone", func(s *Spec) { *s = Spec{Scopes: []string{"a"}} }, "auth.scopes", "scopes applies only to auth type oauth2, not none"},
		{"GrantOnAPIKey", func(s *Spec) { *s = Spec{Type: TypeAPIKey, Grant: GrantRefreshToken} }, "auth.grant", "applies only to auth type oauth2"},
		{"AuthStyleOnHeaders", func(s *Spec) { *s = *datadogSpec(); s.AuthStyle = "header" }, "auth.auth_style", "applies only to auth type oauth2"},
		{"ClientIDOnBearer", func(s *Spec) { *s = Spec{Type: TypeBearer, ClientID: "c"} }, "auth.client_id", "applies only to auth type oauth2"},
		{"RelativeAuthorizeURL", func(s *Spec) { s.AuthorizeURL = "/oauth/authorize" }, "auth.authorize_url", "absolute http or https URL"},
		{"JavascriptAuthorizeURL", func(s *Spec) { s.AuthorizeURL = "javascript:alert(1)" }, "auth.authorize_url", "absolute http or https URL"},
		{"UserinfoAuthorizeURL", func(s *Spec) { s.AuthorizeURL = "https://u:p@login.example/authorize" }, "auth.authorize_url", "must not hold userinfo"},
		{"AuthorizeURLClientCredentials", func(s *Spec) {
			s.Grant, s.AuthorizeURL = GrantClientCredentials, "https://login.example/authorize"
		}, "auth.authorize_url", "only to grant refresh_token"},
		{"AuthorizeParamsAlone", func(s *Spec) { s.AuthorizeParams = map[string]string{"prompt": "consent"} }, "auth.authorize_params", "needs authorize_url"},
		{"AuthorizeParamsReserved", func(s *Spec) {
			s.AuthorizeURL, s.AuthorizeParams = "https://login.example/authorize", map[string]string{"redirect_uri": "https://evil.example/cb"}
		}, "auth.authorize_params.redirect_uri", "set by callq's authorization request"},
		{"AuthorizeParamsControl", func(s *Spec) {
			s.AuthorizeURL, s.AuthorizeParams = "https://login.example/authorize", map[string]string{"prompt": "consent\r\n"}
		}, "auth.authorize_params.prompt", "no control character"},
		{"AuthorizeURLOnBearer", func(s *Spec) { *s = Spec{Type: TypeBearer, AuthorizeURL: "https://x.example/a"} }, "auth.authorize_url", "applies only to auth type oauth2"},
	}
	for _, tc := range invalid {
		s := base()
		tc.mod(s)
		err := s.Validate()
		var fe *FieldError
		require.ErrorAs(t, err, &fe, tc.name)
		require.Equal(t, tc.field, fe.Field, tc.name)
		require.ErrorContains(t, err, tc.want, tc.name)
		require.NotContains(t, err.Error(), "literal-client-secret", tc.name)
	}
	require.ErrorContains(t, (&Spec{Type: "oauth3"}).Validate(), "or oauth2")

	// Fields, sensitive headers, Apply.
	s := base()
	require.Equal(t, []string{FieldAccessToken, FieldRefreshToken}, s.RequiredFields())
	require.Equal(t, []string{"Authorization"}, s.SensitiveHeaders())
	require.Nil(t, s.SensitiveQuery())
	req := newRequest(t, "https://api.example/x")
	require.NoError(t, s.Apply(req, Secrets{FieldAccessToken: "at-123", FieldRefreshToken: "rt-456"}))
	require.Equal(t, "Bearer at-123", req.Header.Get("Authorization"))
	var mf *MissingFieldError
	require.ErrorAs(t, s.Apply(newRequest(t, "https://api.example/x"), Secrets{FieldRefreshToken: "rt-456"}), &mf)
	require.Equal(t, FieldAccessToken, mf.Field)
	require.Error(t, s.Apply(newRequest(t, "https://api.example/x"), Secrets{FieldAccessToken: "a\r\nX-Evil: 1"}))

	// The client secret never reaches JSON, nor fmt when it is a literal.
	s.Scopes = []string{"read"}
	b, err := json.Marshal(s)
	require.NoError(t, err)
	require.NotContains(t, string(b), "literal-client-secret")
	require.NotContains(t, string(b), "client_secret")
	require.Contains(t, string(b), `"token_url":"https://login.example/oauth/token"`)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		require.NotContains(t, fmt.Sprintf(verb, s), "literal-client-secret", verb)
		require.NotContains(t, fmt.Sprintf(verb, *s), "literal-client-secret", verb)
		require.NotContains(t, fmt.Sprintf(verb, struct{ Auth Spec }{*s}), "literal-client-secret", verb)
	}
	require.Contains(t, fmt.Sprintf("%+v", s), "ClientSecret:[REDACTED]")
	s.ClientSecret = "env:CRM_SECRET"
	require.Contains(t, fmt.Sprintf("%+v", s), "ClientSecret:env:CRM_SECRET")

	// The catalog's YAML keys.
	var fromYAML Spec
	require.NoError(t, yaml.Unmarshal([]byte(`
type: oauth2
token_url: https://login.example/oauth/token
client_id: cid
client_secret: env:CRM_SECRET
scopes: [read, write]
grant: client_credentials
auth_style: params
`), &fromYAML))
	require.Equal(t, Spec{Type: TypeOAuth2, TokenURL: "https://login.example/oauth/token", ClientID: "cid",
		ClientSecret: "env:CRM_SECRET", Scopes: []string{"read", "write"}, Grant: GrantClientCredentials, AuthStyle: AuthStyleParams}, fromYAML)
	require.NoError(t, fromYAML.Validate())
}
