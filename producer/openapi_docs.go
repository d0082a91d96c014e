package producer

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"slices"
	"strings"
)

// The reference page at GET /docs is rendered on the server, once, from
// the OpenAPI document: no script, no CDN, no external asset, and a
// Content-Security-Policy that allows nothing but its own inline style (by
// hash).

//go:embed docs.html
var docsHTML string

//go:embed docs.css
var docsStyle string

var docsCSP = "default-src 'none'; style-src 'sha256-" + func() string {
	sum := sha256.Sum256([]byte(docsStyle))
	return base64.StdEncoding.EncodeToString(sum[:])
}() + "'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// The parts of an OpenAPI document the page shows.
type oaDoc struct {
	Info struct {
		Title       string `json:"title"`
		Version     string `json:"version"`
		Description string `json:"description"`
	} `json:"info"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas    map[string]json.RawMessage `json:"schemas"`
		Responses  map[string]oaResponse      `json:"responses"`
		Parameters map[string]oaParameter     `json:"parameters"`
		Security   map[string]struct {
			Scheme      string `json:"scheme"`
			Description string `json:"description"`
		} `json:"securitySchemes"`
	} `json:"components"`
}

type oaOperation struct {
	OperationID string                `json:"operationId"`
	Summary     string                `json:"summary"`
	Description string                `json:"description"`
	Role        string                `json:"x-callq-role"`
	Security    *[]any                `json:"security"`
	Parameters  []oaParameter         `json:"parameters"`
	RequestBody *oaBody               `json:"requestBody"`
	Responses   map[string]oaResponse `json:"responses"`
}

type oaParameter struct {
	Ref         string          `json:"$ref"`
	Name        string          `json:"name"`
	In          string          `json:"in"`
	Required    bool            `json:"required"`
	Description string          `json:"description"`
	Schema      json.RawMessage `json:"schema"`
}

type oaBody struct {
	Required bool                   `json:"required"`
	Content  map[string]oaMediaType `json:"content"`
}

type oaResponse struct {
	Ref         string                 `json:"$ref"`
	Description string                 `json:"description"`
	Content     map[string]oaMediaType `json:"content"`
}

type oaMediaType struct {
	Schema   json.RawMessage `json:"schema"`
	Example  json.RawMessage `json:"example"`
	Examples map[string]struct {
		Summary string          `json:"summary"`
		Value   json.RawMessage `json:"value"`
	} `json:"examples"`
}

// The page's view of them.
type docsPage struct {
	Title, Version, Description, Auth string
	Style                             template.CSS
	Operations                        []docsOperation
	Schemas                           []docsSchema
}

type docsOperation struct {
	ID, Method, Path, Summary, Description, Role string
	Public                                       bool
	Parameters                                   []docsParameter
	Body                                         *docsBody
	Responses                                    []docsResponse
}

type docsParameter struct {
	Name, In, Type, Description string
	Required                    bool
}

type docsBody struct {
	MediaType, Schema string
	Ref, Required     bool
	Examples          []docsExample
}

type docsExample struct{ Summary, JSON string }

type docsResponse struct {
	Status, Description, MediaType, Schema string
	Ref                                    bool
	Examples                               []docsExample
}

type docsSchema struct{ Name, JSON string }

var docsMethods = []string{"get", "head", "post", "put", "patch", "delete", "options"}

func renderDocs(docJSON []byte) ([]byte, error) {
	var d oaDoc
	if err := json.Unmarshal(docJSON, &d); err != nil {
		return nil, err
	}
	page := docsPage{Title: d.Info.Title, Version: d.Info.Version, Description: d.Info.Description, Style: template.CSS(docsStyle)}
	for _, s := range d.Components.Security {
		page.Auth = s.Description
	}
	paths := make([]string, 0, len(d.Paths))
	for p := range d.Paths {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		item := d.Paths[p]
		var shared []oaParameter
		if raw, ok := item["parameters"]; ok {
			if err := json.Unmarshal(raw, &shared); err != nil {
				return nil, err
			}
		}
		for _, m := range docsMethods {
			raw, ok := item[m]
			if !ok {
				continue
			}
			var op oaOperation
			if err := json.Unmarshal(raw, &op); err != nil {
				return nil, err
			}
			page.Operations = append(page.Operations, d.operation(p, m, &op, shared))
		}
	}
	names := make([]string, 0, len(d.Components.Schemas))
	for n := range d.Components.Schemas {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		page.Schemas = append(page.Schemas, docsSchema{Name: n, JSON: indentJSON(d.Components.Schemas[n])})
	}
	tmpl, err := template.New("docs").Funcs(template.FuncMap{"lower": strings.ToLower}).Parse(docsHTML)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, page); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func (d *oaDoc) operation(path, method string, op *oaOperation, shared []oaParameter) docsOperation {
	o := docsOperation{ID: op.OperationID, Method: strings.ToUpper(method), Path: path, Summary: op.Summary,
		Description: op.Description, Role: op.Role, Public: op.Security != nil && len(*op.Security) == 0}
	for _, p := range append(slices.Clone(shared), op.Parameters...) {
		if p.Ref != "" {
			p = d.Components.Parameters[refName(p.Ref)]
		}
		typ, _ := schemaName(p.Schema)
		o.Parameters = append(o.Parameters, docsParameter{Name: p.Name, In: p.In, Type: typ,
			Description: p.Description, Required: p.Required})
	}
	if b := op.RequestBody; b != nil {
		for mt, c := range b.Content {
			name, ref := schemaName(c.Schema)
			o.Body = &docsBody{MediaType: mt, Schema: name, Ref: ref, Required: b.Required, Examples: examples(c)}
		}
	}
	statuses := make([]string, 0, len(op.Responses))
	for s := range op.Responses {
		statuses = append(statuses, s)
	}
	slices.Sort(statuses)
	for _, s := range statuses {
		r := op.Responses[s]
		if r.Ref != "" {
			r = d.Components.Responses[refName(r.Ref)]
		}
		dr := docsResponse{Status: s, Description: r.Description}
		for mt, c := range r.Content {
			dr.MediaType, dr.Examples = mt, examples(c)
			dr.Schema, dr.Ref = schemaName(c.Schema)
		}
		o.Responses = append(o.Responses, dr)
	}
	return o
}

func examples(c oaMediaType) []docsExample {
	var out []docsExample
	if len(c.Example) > 0 {
		out = append(out, docsExample{JSON: indentJSON(c.Example)})
	}
	names := make([]string, 0, len(c.Examples))
	for n := range c.Examples {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		e := c.Examples[n]
		out = append(out, docsExample{Summary: e.Summary, JSON: indentJSON(e.Value)})
	}
	return out
}

func refName(ref string) string { return ref[strings.LastIndexByte(ref, '/')+1:] }

// schemaName is a schema in a word: the component it refers to (ref
// true), else its type, else its JSON.
func schemaName(raw json.RawMessage) (name string, ref bool) {
	var s struct {
		Ref   string          `json:"$ref"`
		Type  json.RawMessage `json:"type"`
		Items json.RawMessage `json:"items"`
	}
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	switch {
	case s.Ref != "":
		return refName(s.Ref), true
	case string(s.Type) == `"array"` && s.Items != nil:
		name, _ := schemaName(s.Items)
		return name + "[]", false
	case s.Type != nil && !strings.HasPrefix(string(s.Type), "["):
		return strings.Trim(string(s.Type), `"`), false
	}
	return string(raw), false
}

func indentJSON(raw json.RawMessage) string {
	var buf bytes.Buffer
	if json.Indent(&buf, raw, "", "  ") != nil {
		return string(raw)
	}
	return buf.String()
}
