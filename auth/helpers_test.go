package auth

import (
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// testKeyring returns a ring of one fresh key with id kid.
func testKeyring(t *testing.T, kid string) *Keyring {
	t.Helper()
	key, err := GenerateKey()
	require.NoError(t, err)
	ring, err := ParseKeyring(kid + ":" + key)
	require.NoError(t, err)
	return ring
}

// testRedis starts a miniredis for one test and a client on it.
func testRedis(t *testing.T) (*miniredis.Miniredis, *redis.Client) {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return mr, rdb
}

// redisDump returns every key and value in mr as one string, for asserting
// that no secret is stored in clear.
func redisDump(t *testing.T, mr *miniredis.Miniredis) string {
	t.Helper()
	var out []byte
	for _, k := range mr.Keys() {
		out = append(out, k...)
		out = append(out, '\n')
		switch typ := mr.Type(k); typ {
		case "string":
			v, err := mr.Get(k)
			require.NoError(t, err)
			out = append(out, v...)
		case "hash":
			fields, err := mr.HKeys(k)
			require.NoError(t, err)
			for _, f := range fields {
				out = append(out, f+"="+mr.HGet(k, f)+"\n"...)
			}
		case "set":
			members, err := mr.SMembers(k)
			require.NoError(t, err)
			for _, m := range members {
				out = append(out, m+"\n"...)
			}
		default:
			t.Fatalf("key %q has type %q, which redisDump does not read", k, typ)
		}
		out = append(out, '\n')
	}
	return string(out)
}
