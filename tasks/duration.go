package tasks

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written as a Go duration string ("1.5s", "2m")
// in JSON and YAML. A bare JSON number is read as seconds, since that is what
// most people mean by "timeout": 10.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil // as for any other optional field
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		return d.parse(s)
	}
	secs, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("must be a duration such as \"10s\" or a number of seconds")
	}
	return d.fromSeconds(secs)
}

// maxSeconds keeps a number of seconds inside time.Duration's range.
const maxSeconds = float64(math.MaxInt64 / int64(time.Second))

func (d *Duration) fromSeconds(secs float64) error {
	if secs > maxSeconds || secs < -maxSeconds {
		return fmt.Errorf("%g seconds is out of range", secs)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// UnmarshalYAML reads a duration string or a number of seconds.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Tag == "!!int" || n.Tag == "!!float" {
		secs, err := strconv.ParseFloat(n.Value, 64)
		if err != nil {
			return err
		}
		return d.fromSeconds(secs)
	}
	return d.parse(n.Value)
}

func (d *Duration) parse(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("must be a duration such as \"10s\", got %q", s)
	}
	*d = Duration(v)
	return nil
}
