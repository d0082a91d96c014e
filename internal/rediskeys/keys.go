package rediskeys

import "strings"

// Prefix begins every key.
const Prefix = "callq"

// DoneChannel is the pub/sub channel on which a call's terminal write
// publishes "<tenant>:<id>".
const DoneChannel = Prefix + ":done"

// Record is the hash holding the record of tenant's call id. Untagged, so
// records spread over a cluster.
func Record(tenant, id string) string {
	return Prefix + ":call:" + tenant + ":" + id
}

// tenantTag begins every key of tenant's credentials and OAuth2 state: the
// {tenant} hash tag keeps them in one slot.
func tenantTag(tenant string) string {
	return Prefix + ":{" + tenant + "}:"
}

// Credential is the key of tenant's credential ref.
func Credential(tenant, ref string) string {
	return tenantTag(tenant) + "cred:" + ref
}

// Credentials is the set of tenant's credential refs.
func Credentials(tenant string) string {
	return tenantTag(tenant) + "creds"
}

// OAuthToken is the key of the client_credentials token cached under the
// OAuth2 name (see the package doc); the name's "cc:" is dropped.
func OAuthToken(tenant, name string) string {
	return tenantTag(tenant) + "oauthcc:" + strings.TrimPrefix(name, "cc:")
}

// OAuthLock is the key of the fleet-wide refresh lock of the OAuth2 name.
func OAuthLock(tenant, name string) string {
	return tenantTag(tenant) + "oauthlock:" + name
}

// OAuthFailure is the key of the failure remembered for the OAuth2 name.
func OAuthFailure(tenant, name string) string {
	return tenantTag(tenant) + "oauthfail:" + name
}

// SCAN patterns, for the work that spans every tenant (auth's Reseal).
const (
	// CredentialPattern matches every credential key, and also some other
	// keys of the tenants' slots: check each with ParseCredential.
	CredentialPattern = Prefix + ":{*}:cred:*"
	// OAuthTokenPattern matches every cached client_credentials token.
	OAuthTokenPattern = Prefix + ":{*}:oauthcc:*"
)

// ParseCredential returns the tenant and ref of a Credential key, and false
// for any other key.
func ParseCredential(key string) (tenant, ref string, ok bool) {
	rest, ok := strings.CutPrefix(key, Prefix+":{")
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, "}:cred:")
}

// APIKey is the key of the API key whose secret has the SHA-256 hex hash.
func APIKey(hash string) string {
	return Prefix + ":apikey:" + hash
}

// APIKeys is the hash of API key ids to the hashes APIKey takes.
const APIKeys = Prefix + ":apikeys"

// RateLimit is the key given to go-redis/redis_rate for the rate limit of
// tenant's calls to integration with credential (none: ""); redis_rate
// stores it under "rate:" followed by this. "|" is in no tenant,
// integration or credential name.
func RateLimit(tenant, integration, credential string) string {
	if credential == "" {
		credential = "-"
	}
	return Prefix + ":" + tenant + "|" + integration + "|" + credential
}
