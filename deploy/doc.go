// Package deploy holds callq's deployment files: the image, compose and
// Kubernetes manifests, and the example integration catalog. Its only Go is
// the example catalog, embedded so that `callq dev` runs from any
// directory: integrations.example.yaml here is the one copy, read by people
// and built into the binary alike.
package deploy

import _ "embed"

// ExampleCatalog is integrations.example.yaml: the catalog `callq dev`
// uses when no other is given and there is no deploy/integrations.example.yaml
// where it runs.
//
//go:embed integrations.example.yaml
var ExampleCatalog []byte
