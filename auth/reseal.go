package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/internal/rediskeys"
)

// ResealStats says what Reseal did.
type ResealStats struct {
	// Credentials is how many credentials were rewritten.
	Credentials int `json:"credentials"`
	// Fields is how many sealed fields moved to the primary key.
	Fields int `json:"fields"`
	// Unreadable lists "tenant/ref.field" of fields sealed under a key the
	// ring no longer holds: they are left as they are and their calls fail
	// with kind credential until the credential is put again.
	Unreadable []string `json:"unreadable"`
	// TokensDropped is how many cached OAuth2 client_credentials tokens were
	// dropped; they are fetched again on their next use.
	TokensDropped int `json:"tokens_dropped"`
}

// sealedKeyID returns the key ID a sealed value names ("v1.<kid>.<data>").
func sealedKeyID(sealed string) string {
	_, rest, _ := strings.Cut(sealed, ".")
	kid, _, _ := strings.Cut(rest, ".")
	return kid
}

// Reseal re-seals every literal field of every credential, of every tenant,
// under the keyring's primary (first) key, so that older keys can then be
// removed from CALLQ_SECRET_KEY. Each credential is rewritten atomically
// (WATCH), so a concurrent Put or token refresh is not lost. It is safe to
// run again.
func (s *Store) Reseal(ctx context.Context) (*ResealStats, error) {
	stats := &ResealStats{Unreadable: []string{}}
	primary := s.keyring.PrimaryID()
	err := s.scan(ctx, rediskeys.CredentialPattern, func(key string) error {
		tenant, ref, ok := rediskeys.ParseCredential(key)
		if !ok {
			return nil
		}
		return s.resealOne(ctx, key, tenant, ref, primary, stats)
	})
	if err != nil {
		return stats, err
	}
	err = s.scan(ctx, rediskeys.OAuthTokenPattern, func(key string) error {
		n, err := s.rdb.Del(ctx, key).Result()
		stats.TokensDropped += int(n)
		return err
	})
	return stats, err
}

func (s *Store) resealOne(ctx context.Context, key, tenant, ref, primary string, stats *ResealStats) error {
	for range updateFieldsAttempts {
		moved := 0
		var unreadable []string
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			cred, err := s.get(ctx, tx, tenant, ref)
			if err != nil {
				return err
			}
			for name, v := range cred.Fields {
				if v.Kind != KindLiteral || sealedKeyID(v.Sealed) == primary {
					continue
				}
				aad := fieldAAD(tenant, ref, name)
				plain, err := s.keyring.Open(v.Sealed, aad)
				if err != nil {
					unreadable = append(unreadable, tenant+"/"+ref+"."+name)
					continue
				}
				if v.Sealed, err = s.keyring.Seal(plain, aad); err != nil {
					return err
				}
				cred.Fields[name] = v
				moved++
			}
			if moved == 0 {
				return nil
			}
			b, err := json.Marshal(cred)
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				pipe.Set(ctx, key, b, 0)
				return nil
			})
			return err
		}, key)
		switch {
		case errors.Is(err, redis.TxFailedErr):
			continue
		case errors.Is(err, ErrCredentialNotFound):
			return nil // deleted meanwhile
		case err != nil:
			return fmt.Errorf("resealing credential %q of tenant %q: %w", ref, tenant, err)
		}
		if moved > 0 {
			s.changed(ctx, tenant, ref)
			stats.Credentials++
			stats.Fields += moved
		}
		stats.Unreadable = append(stats.Unreadable, unreadable...)
		return nil
	}
	return fmt.Errorf("resealing credential %q of tenant %q: it kept changing under %d attempts", ref, tenant, updateFieldsAttempts)
}

// scan calls fn for every key matching pattern, on every master of a
// cluster.
func (s *Store) scan(ctx context.Context, pattern string, fn func(key string) error) error {
	each := func(ctx context.Context, c redis.Cmdable) error {
		iter := c.Scan(ctx, 0, pattern, 500).Iterator()
		for iter.Next(ctx) {
			if err := fn(iter.Val()); err != nil {
				return err
			}
		}
		return iter.Err()
	}
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return each(ctx, c) })
	}
	return each(ctx, s.rdb)
}
