// Package rediskeys names every Redis key callq writes, in one place, with
// one prefix and one hash-tag rule for Redis Cluster. callq's code builds
// its keys here and nowhere else (asynq builds its own).
//
// # Prefix
//
// Every key begins "callq:" ([Prefix]). It is a constant, not a setting:
// asynq's own keys ("asynq:{<queue>}:...") cannot be prefixed, so a prefix
// never let two deployments share a Redis (and callq's command never set
// one). Deployments that must not see each other use separate Redis
// databases or servers. Pub/sub is not per database, so deployments on one
// server hear each other's completions: a waiter woken by another's reads
// its own record again and waits on. The one exception to the prefix is the
// rate limiter's key, to which go-redis/redis_rate (v10, which has no option
// for it) prepends "rate:".
//
// # Keys
//
//	callq:{<tenant>:<shard>}:call:<id>         hash: a call's record (tasks.Store)
//	callq:{<tenant>:<shard>}:ix:open           zset: the calls index of the shard: the calls not finished
//	callq:{<tenant>:<shard>}:ix:s:<status>     zset: the calls finished with status
//	callq:{<tenant>:<shard>}:ix:i:<integration> zset: every call to integration
//	callq:{<tenant>:<shard>}:ix:names          set: the integrations the shard has an index of
//	callq:tenants                              set: every tenant that has created a call
//	callq:reconcile:lease                      string: the lease of the fleet's one reconciler
//	callq:call:<tenant>:<id>                   hash: a record as callq before the calls index kept it
//	callq:legacy:moved                         string: set once no record is left in that layout
//	callq:done                                 pub/sub channel: "<tenant>:<id>" of each finished call someone waits for
//	callq:circuits                             pub/sub channel: the key of each circuit that opens (package flow)
//	callq:{<tenant>}:cred:<ref>                string: a credential's JSON, literal fields sealed (auth.Store)
//	callq:{<tenant>}:creds                     set: the refs of the tenant's credentials
//	callq:{<tenant>}:oauthcc:<subject>         string: a cached client_credentials token, sealed
//	callq:{<tenant>}:oauthlock:<name>          string: the fleet's refresh lock of one token
//	callq:{<tenant>}:oauthfail:<name>          string: a token request's failure, remembered briefly
//	callq:{<tenant>}:circuit:<integration>     hash: the state of the tenant's circuit breaker of an integration (package flow)
//	callq:{<tenant>}:circuit:<integration>|<cred> hash: the same, per credential (circuit_breaker.per: credential; "" for none)
//	callq:{<tenant>}:circuits                  set: "<integration>|<cred>" of the tenant's per-credential circuits not closed
//	callq:{<tenant>}:slots:<integration>       zset: concurrency slots in use, all credentials: token → lease end, ms (internal/flow)
//	callq:{<tenant>}:slots:<integration>|<cred> zset: those of one credential ("-" for none), for a cap counted per credential
//	callq:{<tenant>}:sched                     hash: schedule id → the schedule's JSON (producer's schedules)
//	callq:{<tenant>}:sched:state               hash: "<id>" → Unix second of its last firing, "<id>:error" → why its last firing failed
//	callq:sched:tenants                        set: every tenant that has had a schedule
//	callq:sched:version                        string: a counter each change of a schedule increments
//	callq:sched:lease                          string: the lease of the fleet's one running scheduler
//	callq:apikey:<sha256 hex>                  string: an API key's JSON, under the hash of its secret (auth.KeyStore)
//	callq:apikeys                              hash: API key id → sha256 hex, for List and Revoke
//	callq:uisession:<sha256 hex>               string: a dashboard session's JSON, under the hash of its token; expires when idle (internal/dashboard)
//	callq:connect:session:<sha256 hex>         string: a connect session's JSON, under the hash of its token; expires with it (producer)
//	callq:connect:state:<sha256 hex>           string: an authorization request's session and PKCE verifier, under the hash of its state (producer)
//	rate:callq:<tenant>|<integration>|<cred>   redis_rate's GCRA state of one rate limit ("-" for no credential)
//
// An OAuth2 token's name is "cred:<ref>" (grant refresh_token: the lock and
// failure guard the credential itself) or, for grant client_credentials,
// "cc:cred:<ref>:<client>:<version>" or "cc:int:<integration>:<client>";
// the token cache's subject is that name without "cc:".
//
// No part ever holds a brace: tenants are [a-z0-9_-], refs, ids and
// integration names [A-Za-z0-9._:-], API key hashes and client digests hex.
// So the only hash tags are the ones placed here.
//
// # Hash tags (Redis Cluster)
//
// A Lua script, a MULTI/EXEC and an MGET may only touch keys of one slot.
// The rule: keys that one of them touches together share a hash tag; every
// other key is left untagged, so that it spreads over the cluster.
//
//   - A tenant's credentials and OAuth2 state are tagged {<tenant>}. Put and
//     Delete change a credential and the tenant's set in one MULTI/EXEC;
//     List reads the tenant's credentials in one MGET; the OAuth2 paths read
//     a credential or cached token with its remembered failure in one
//     pipeline, which stays one round trip on one node. A tenant has few,
//     small credentials, so one slot per tenant holds them easily.
//   - A tenant's records and their index are spread over RecordShards (16)
//     shards, tagged {<tenant>:<shard>}, the shard a hash of the call's ID
//     (Shard). The scripts that create and finish a record also write its
//     entries in the calls index (tasks' List, Count and the reconciler),
//     so the record and the index of its shard share a slot. Records are
//     the bulk of callq's data and traffic: one tag per tenant would pin a
//     busy tenant's every call to one node, while 16 shards spread it over
//     up to 16 slots (and so nodes). A tenant larger than 16 nodes can
//     carry should be split into several tenants. Listing reads the 16
//     shards' indexes in one pipeline and merges them.
//   - Records written before the calls index (untagged,
//     "callq:call:<tenant>:<id>") are moved into their shard, indexed, by
//     the first read or write that misses them, and by the reconciler.
//   - The done channel is global: classic pub/sub reaches every node of a
//     cluster. The write script publishes to it by the name in its ARGV,
//     which Redis allows because a channel is not a key. Sharded pub/sub
//     (SPUBLISH) is not used: its channel hashes to a slot like a key, so
//     the script could publish only to a channel in the record's slot.
//   - A tenant's schedules and their state are tagged {<tenant>}, like its
//     credentials: the scripts that create, replace and delete a schedule
//     change both hashes (the state's error is cleared on a change), and
//     the scheduler's write of a firing's outcome checks the schedule
//     still exists. The set of tenants with schedules, the version counter
//     and the lease are global and untagged: no script touches them with
//     another key. A change writes the tenant's hashes, then the version;
//     a tenant enters the set before its first schedule is written, so a
//     crash in between leaves at most a tenant with nothing to read. A
//     tenant is never taken out of the set (removing it safely would need
//     both slots at once): one whose schedules are all deleted costs the
//     scheduler an empty read when it reads the schedules again.
//   - An API key and the index of API keys are not tagged: no transaction
//     spans them. KeyStore writes them in an order that is safe if it dies
//     between the two, and List reads the keys with a pipeline of GETs.
//   - A rate limit is one key, the only one its script touches.
//   - A circuit breaker's state is one hash per tenant and integration (or
//     credential), tagged {<tenant>} like the tenant's credentials: each of
//     its scripts (the check before a call, the report after it) touches
//     the hash and the tenant's set of per-credential circuits not closed,
//     which the scripts keep in step, so both share the tenant's slot.
//     Circuits are per tenant, so that one tenant's failures (a bad
//     credential, a flood of bad requests) never hold another's calls. The
//     report script publishes an opening to the global circuits channel,
//     like the done channel (a channel is not a key).
//   - A tenant's concurrency slots are tagged {<tenant>}, beside its
//     credentials: a cap counted per credential takes a slot in the
//     credential's set and in the integration's in one script, so the two
//     sets share a cluster slot (and the integration's set is the one key
//     read for its slots in use). A set holds only leases still running
//     (each script drops the ended ones) and expires with its last lease.
//   - A dashboard session is one key, read and renewed by one command
//     (GETEX), so it is not tagged either. It is named by the SHA-256 of
//     the session's token, so that Redis never holds a token that opens
//     the dashboard.
//
// # asynq's queues
//
// asynq keeps each of its queues under "asynq:{<queue>}:..." (the pending
// list, the task hashes, the scheduled, retry and active sets): the whole
// queue is in one hash slot, so one asynq queue is one master's work, and
// a cluster's other masters would carry none of it. callq therefore may
// split each logical queue (a call's "queue", and the webhook queue) into
// n asynq queues, CALLQ_QUEUE_SHARDS (QueueShard names them):
//
//	<queue>                                    n = 1 (the default): asynq's queue is the logical queue, as always
//	<queue>#<k> or <queue>#<k>.<j>             n > 1: shard k of n, placed in the kth nth of the slot space
//
// A call's shard is a hash of its correlation ID, so every lookup of its
// task (a cancel, the API's "running", the reconciler, a replay, its
// webhook) finds the same asynq queue from the record's logical queue and
// ID (tasks.Sharding does the routing). No logical queue's name holds "#"
// (QueueShardSep), so LogicalQueue reads the logical queue back from an
// asynq queue's name. Two counts may name a shard alike (their searches
// met the same name): that asynq queue then serves both, which is harmless.
//
// No script builds a key from ARGV: every key a script touches is in KEYS.
// The tests check the rule against a real redis-server in cluster mode
// (CLUSTER KEYSLOT, and the stores run through a cluster client).
package rediskeys
