package rediskeys

import (
	"strconv"
	"strings"
)

// Prefix begins every key.
const Prefix = "callq"

// DoneChannel is the pub/sub channel on which a call's terminal write
// publishes "<tenant>:<id>", when someone waits for the call (tasks.Store's
// Wait marks it).
const DoneChannel = Prefix + ":done"

// RecordShards is how many slots a tenant's records and their index spread
// over (see the package doc): a call's shard is a hash of its ID.
const RecordShards = 16

// Shard is the shard of the call id among RecordShards (FNV-1a).
func Shard(id string) int {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return int(h % RecordShards)
}

// shardTag begins every key of one shard of tenant's records and index:
// the {tenant:shard} hash tag keeps a record and the index entries its
// scripts write in one slot.
func shardTag(tenant string, shard int) string {
	return Prefix + ":{" + tenant + ":" + strconv.Itoa(shard) + "}:"
}

// Record is the hash holding the record of tenant's call id, in the call's
// shard.
func Record(tenant, id string) string {
	return shardTag(tenant, Shard(id)) + "call:" + id
}

// LegacyRecord is where callq before the calls index kept a record
// (untagged). Records found there are moved to Record on first touch.
func LegacyRecord(tenant, id string) string {
	return Prefix + ":call:" + tenant + ":" + id
}

// LegacyRecordPattern matches every LegacyRecord key.
const LegacyRecordPattern = Prefix + ":call:*"

// Index is one index of one shard of tenant's calls: a sorted set of
// "<created_at ms, 13 digits>:<id>" members, all of score 0, read by lex
// range newest first. name is IndexOpen, IndexStatus(...) or
// IndexIntegration(...).
func Index(tenant string, shard int, name string) string {
	return shardTag(tenant, shard) + "ix:" + name
}

// Index names.
const (
	// IndexOpen holds the calls that have not finished.
	IndexOpen = "open"
	// IndexNames is not an index but a set: the integrations the shard has
	// indexes of, for pruning them.
	IndexNames = "names"
)

// IndexStatus names the index of the calls that finished with status, and
// with an integration, the index of those calls to that integration.
func IndexStatus(status, integration string) string {
	if integration == "" {
		return "s:" + status
	}
	return "si:" + status + ":" + integration
}

// IndexIntegration names the index of every call to integration.
func IndexIntegration(integration string) string { return "i:" + integration }

// Tenants is the set of tenants that have made calls: what work spanning
// every tenant (the reconciler) walks.
const Tenants = Prefix + ":tenants"

// ReconcileLease is the lease of the fleet's one running reconciler.
const ReconcileLease = Prefix + ":reconcile:lease"

// LegacyMoved marks that a scan found no record left in the legacy layout
// (every one it met was moved): later scans are skipped.
const LegacyMoved = Prefix + ":legacy:moved"

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

// ConnectSession is the key of the connect session whose token has the
// SHA-256 hex hash (package producer); it expires with the session.
func ConnectSession(hash string) string {
	return Prefix + ":connect:session:" + hash
}

// ConnectState is the key of an OAuth2 authorization request in flight,
// under the SHA-256 hex hash of its state parameter (package producer).
func ConnectState(hash string) string {
	return Prefix + ":connect:state:" + hash
}

// UISession is the key of the dashboard session whose token has the
// SHA-256 hex hash: a string holding the session's JSON, which expires when
// the session has been idle (internal/dashboard).
func UISession(hash string) string {
	return Prefix + ":uisession:" + hash
}

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

// Circuit is the hash holding the state of tenant's circuit breaker of
// integration (package flow): per integration when perCredential is false,
// else of the calls with credential (none: ""). "|" is in no integration
// name, so the two forms never meet.
func Circuit(tenant, integration string, perCredential bool, credential string) string {
	if perCredential {
		return tenantTag(tenant) + "circuit:" + CircuitMember(integration, credential)
	}
	return tenantTag(tenant) + "circuit:" + integration
}

// CredentialChannel is the pub/sub channel on which every change to a
// credential publishes its key (Credential), so that workers drop the copy
// they keep (auth.Cache).
const CredentialChannel = Prefix + ":credentials"

// CircuitChannel is the pub/sub channel on which a circuit's opening
// publishes its key (rediskeys.Circuit), so that workers stop trusting what
// they remember of it.
const CircuitChannel = Prefix + ":circuits"

// Circuits is the set of tenant's per-credential circuits that are not
// closed, as CircuitMember names them: what GET /v1/integrations lists
// without scanning for them.
func Circuits(tenant string) string {
	return tenantTag(tenant) + "circuits"
}

// CircuitMember names a per-credential circuit in Circuits:
// "<integration>|<credential>".
func CircuitMember(integration, credential string) string {
	return integration + "|" + credential
}

// ParseCircuitMember splits a Circuits member into its integration and
// credential.
func ParseCircuitMember(member string) (integration, credential string, ok bool) {
	return strings.Cut(member, "|")
}

// Slots is the sorted set of the concurrency slots in use by tenant's calls
// to integration, all credentials together (internal/flow): members are
// slot tokens, scored by the Unix millisecond their lease ends. A cap
// counted per integration counts this set; one counted per credential
// counts SlotsOf and adds each slot here too, so that the slots in use of
// an integration are one read of one key either way.
func Slots(tenant, integration string) string {
	return tenantTag(tenant) + "slots:" + integration
}

// SlotsOf is the sorted set of the concurrency slots in use by tenant's
// calls to integration with credential (none: ""), like Slots. "|" is in no
// integration or credential name.
func SlotsOf(tenant, integration, credential string) string {
	if credential == "" {
		credential = "-"
	}
	return Slots(tenant, integration) + "|" + credential
}
