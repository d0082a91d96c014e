// Package watch follows a Redis pub/sub channel on which the fleet
// announces changes, for a process that keeps a copy of some Redis state
// in memory (flow.Circuits' quiet circuits, auth.Cache's credentials) and
// must drop it when the state changes.
//
// A message missed while the subscription was down cannot be told from
// none, so every break and every (re)subscription is reported too: the
// copy is dropped whole and, while the subscription is down, not used.
package watch
