package httpapi

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

var (
	docOnce sync.Once
	doc     map[string]any
	docErr  error
)

// testDoc is the embedded OpenAPI document, decoded.
func testDoc(t *testing.T) map[string]any {
	t.Helper()
	docOnce.Do(func() { docErr = json.Unmarshal(OpenAPI, &doc) })
	if docErr != nil {
		t.Fatalf("openapi.json: %v", docErr)
	}
	return doc
}

var httpMethods = []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}

// documented lists "METHOD /path" for every operation in the document.
func documented(t *testing.T) []string {
	var out []string
	paths, _ := testDoc(t)["paths"].(map[string]any)
	for p, item := range paths {
		for k := range item.(map[string]any) {
			if slices.Contains(httpMethods, k) {
				out = append(out, strings.ToUpper(k)+" "+p)
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestOpenAPIMatchesRoutes keeps the document true: its operations are
// exactly the route table's, and the mux serves every route of the table
// under that route's pattern.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	d := testDoc(t)
	if v := d["openapi"]; v != "3.1.0" {
		t.Errorf("openapi version %v, want 3.1.0", v)
	}
	var table []string
	for _, rt := range routes {
		table = append(table, rt.pattern())
	}
	slices.Sort(table)
	docd := documented(t)
	for _, p := range table {
		if !slices.Contains(docd, p) {
			t.Errorf("route %s is not in openapi.json", p)
		}
	}
	for _, p := range docd {
		if !slices.Contains(table, p) {
			t.Errorf("openapi.json documents %s, which is not a route", p)
		}
	}
	if len(slices.Compact(slices.Clone(table))) != len(table) {
		t.Errorf("route table has duplicates: %v", table)
	}

	// The handler registers exactly the table: a request to each route's
	// path (parameters filled in) is served by that route's pattern.
	mux := newNode(t, nodeOptions{noProjector: true}).mux
	param := regexp.MustCompile(`\{[a-z_]+\}`)
	for _, rt := range routes {
		path := param.ReplaceAllString(rt.path, "7")
		r := httptest.NewRequest(rt.method, path, nil)
		if _, got := mux.Handler(r); got != rt.pattern() {
			t.Errorf("%s %s is served by %q, want %q", rt.method, path, got, rt.pattern())
		}
	}

	// Every operation documents its errors and every path parameter.
	paths := d["paths"].(map[string]any)
	for _, p := range docd {
		method, path, _ := strings.Cut(p, " ")
		item := paths[path].(map[string]any)
		op := item[strings.ToLower(method)].(map[string]any)
		var names []string
		for _, list := range []any{item["parameters"], op["parameters"]} {
			ps, _ := list.([]any)
			for _, ref := range ps {
				prm := resolve(d, ref.(map[string]any))
				if prm["in"] == "path" {
					names = append(names, prm["name"].(string))
				}
			}
		}
		for _, m := range param.FindAllString(path, -1) {
			if name := strings.Trim(m, "{}"); !slices.Contains(names, name) {
				t.Errorf("%s: path parameter %s not documented", p, name)
			}
		}
		resp := op["responses"].(map[string]any)
		if !strings.HasPrefix(path, "/api/") || path == "/api/openapi.json" {
			continue
		}
		codes := []string{"401", "500", "503"}
		if i := slices.IndexFunc(routes, func(rt route) bool { return rt.pattern() == p }); i >= 0 {
			switch routes[i].access {
			case user:
				codes = append(codes, "429") // the per-user request limit
			case public:
				codes = codes[1:] // no credentials, none refused
			}
		}
		for _, code := range codes {
			if _, ok := resp[code]; !ok {
				t.Errorf("%s: response %s not documented", p, code)
			}
		}
	}
}

// resolve follows a local $ref.
func resolve(d map[string]any, v map[string]any) map[string]any {
	for {
		ref, ok := v["$ref"].(string)
		if !ok {
			return v
		}
		var cur any = d
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			cur = cur.(map[string]any)[part]
		}
		v = cur.(map[string]any)
	}
}

// conform checks a response against the document: its status must be
// documented for the operation and a JSON body must validate against the
// documented schema (types, required fields, enums, closed objects).
func conform(d map[string]any, path, method string, r response) []string {
	item, ok := d["paths"].(map[string]any)[path].(map[string]any)
	if !ok {
		return []string{"path " + path + " not documented"}
	}
	op, ok := item[strings.ToLower(method)].(map[string]any)
	if !ok {
		return []string{method + " not documented"}
	}
	rv, ok := op["responses"].(map[string]any)[strconv.Itoa(r.status)].(map[string]any)
	if !ok {
		return []string{fmt.Sprintf("status %d not documented (have %v)", r.status, slices.Sorted(maps.Keys(op["responses"].(map[string]any))))}
	}
	rv = resolve(d, rv)
	content, _ := rv["content"].(map[string]any)
	media, ok := content["application/json"].(map[string]any)
	if !ok {
		return nil
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return []string{"Content-Type " + ct + ", documented application/json"}
	}
	var body any
	if err := json.Unmarshal(r.body, &body); err != nil {
		return []string{"body is not JSON: " + err.Error()}
	}
	return validate(d, media["schema"].(map[string]any), body, "$")
}

// validate checks v against a JSON Schema subset: $ref, oneOf, type (one or
// a list), enum, const, required, properties, additionalProperties: false,
// items.
func validate(d map[string]any, s map[string]any, v any, at string) []string {
	s = resolve(d, s)
	if alts, ok := s["oneOf"].([]any); ok {
		matched := 0
		var why []string
		for _, alt := range alts {
			errs := validate(d, alt.(map[string]any), v, at)
			if len(errs) == 0 {
				matched++
			}
			why = append(why, errs...)
		}
		if matched != 1 {
			return append([]string{fmt.Sprintf("%s: matches %d of oneOf", at, matched)}, why...)
		}
		return nil
	}
	if t, ok := s["type"]; ok {
		var types []string
		switch t := t.(type) {
		case string:
			types = []string{t}
		case []any:
			for _, x := range t {
				types = append(types, x.(string))
			}
		}
		if !slices.Contains(types, jsonTypeOf(v)) && !(jsonTypeOf(v) == "integer" && slices.Contains(types, "number")) {
			return []string{fmt.Sprintf("%s: %s, want %v", at, jsonTypeOf(v), types)}
		}
	}
	if enum, ok := s["enum"].([]any); ok && !slices.Contains(enum, v) {
		return []string{fmt.Sprintf("%s: %v not in %v", at, v, enum)}
	}
	if c, ok := s["const"]; ok && c != v {
		return []string{fmt.Sprintf("%s: %v, want %v", at, v, c)}
	}
	var errs []string
	switch v := v.(type) {
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		req, _ := s["required"].([]any)
		for _, k := range req {
			if _, ok := v[k.(string)]; !ok {
				errs = append(errs, fmt.Sprintf("%s: required %q missing", at, k))
			}
		}
		for k, x := range v {
			ps, ok := props[k].(map[string]any)
			if !ok {
				if s["additionalProperties"] == false {
					errs = append(errs, fmt.Sprintf("%s: unexpected %q", at, k))
				}
				continue
			}
			errs = append(errs, validate(d, ps, x, at+"."+k)...)
		}
	case []any:
		if items, ok := s["items"].(map[string]any); ok {
			for i, x := range v {
				errs = append(errs, validate(d, items, x, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	}
	return errs
}

func jsonTypeOf(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case float64:
		if v == float64(int64(v)) {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "unknown"
}

// TestValidateCatchesMissingFields makes sure the checker used on every
// response does fail.
func TestValidateCatchesMissingFields(t *testing.T) {
	d := testDoc(t)
	bad := response{status: 200, header: http.Header{"Content-Type": {"application/json"}},
		body: []byte(`{"messages":[{"id":1,"conversation_id":2}]}`)}
	if errs := conform(d, "/api/conversations/{id}/messages", "GET", bad); len(errs) == 0 {
		t.Error("a message without sender_id etc. passed")
	}
	bad = response{status: 418, header: http.Header{"Content-Type": {"application/json"}}, body: []byte(`{}`)}
	if errs := conform(d, "/api/conversations", "GET", bad); len(errs) == 0 {
		t.Error("an undocumented status passed")
	}
	bad = response{status: 400, header: http.Header{"Content-Type": {"application/json"}}, body: []byte(`{"error":"x","code":"nope"}`)}
	if errs := conform(d, "/api/admin/jobs", "POST", bad); len(errs) == 0 {
		t.Error("an unknown error code passed")
	}
}
