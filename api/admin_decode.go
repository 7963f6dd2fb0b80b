package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/cloudwego/hertz/pkg/app"

	"github.com/deferpush/deferpush/adapters/hookjson"
)

// maxAdminBody bounds admin request bodies. A policy is well under 1 KiB;
// the limit is below the listener's own (Config.MaxBodySize) so that the
// refusal is a JSON 413 and not the HTTP layer's plain-text one.
const maxAdminBody = 64 << 10

const (
	mimeJSON       = "application/json"
	mimeMergePatch = "application/merge-patch+json"
)

// readObject checks the Content-Type and size of the request body and
// parses it as one JSON object, keeping each member raw so that the
// caller can tell a missing member from a null one and name the member
// that is wrong.
func readObject(c *app.RequestContext, types ...string) (map[string]json.RawMessage, error) {
	ct := string(c.Request.Header.ContentType())
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !slices.Contains(types, mt) {
		return nil, errMediaType(ct, types...)
	}
	body := c.Request.Body()
	if len(body) > maxAdminBody {
		return nil, errTooLarge(maxAdminBody)
	}
	switch media, problem := jsonBodyProblem(c); {
	case media != "":
		return nil, errMediaType(ct+" ("+media+")", types...)
	case problem != "":
		return nil, errInvalidJSON(problem)
	}
	return parseObject(body)
}

// jsonBodyProblem is what a JSON request body may not carry: a charset
// other than UTF-8 or a content coding (media, a 415: RFC 8259 §8.1
// wants JSON in UTF-8, and no coding is decoded here, RFC 9110 §8.4), or
// bytes that are not UTF-8 (body, a 400: encoding/json would turn them
// into U+FFFD, and a stored message's bytes would change under a 202).
func jsonBodyProblem(c *app.RequestContext) (media, body string) {
	if _, params, err := mime.ParseMediaType(string(c.Request.Header.ContentType())); err == nil {
		if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
			return "charset " + cs + ": JSON is UTF-8", ""
		}
	}
	if enc := c.Request.Header.Peek("Content-Encoding"); len(enc) > 0 && !strings.EqualFold(string(enc), "identity") {
		return "Content-Encoding " + string(enc) + ": send the body without a content coding", ""
	}
	if !utf8.Valid(c.Request.Body()) {
		return "", "not UTF-8 (RFC 8259 §8.1)"
	}
	return "", ""
}

// parseObject parses body as exactly one JSON object.
func parseObject(body []byte) (map[string]json.RawMessage, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errInvalidJSON("empty body: send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var obj map[string]json.RawMessage
	if err := dec.Decode(&obj); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, errInvalidJSON("body must be a JSON object, not " + te.Value)
		}
		return nil, errInvalidJSON("malformed JSON: " + err.Error())
	}
	if obj == nil {
		return nil, errInvalidJSON("body must be a JSON object, not null")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errInvalidJSON("unexpected data after the JSON object")
	}
	if k, dup := hookjson.DuplicateKey(body); dup {
		return nil, errInvalidJSON(fmt.Sprintf("member %q given twice", k))
	}
	return obj, nil
}

// fieldMode says how setFields treats members that are absent or null.
type fieldMode int

const (
	// replaceAll (PUT of the policy): every field must be given, none null.
	replaceAll fieldMode = iota
	// mergePatch (PATCH, RFC 7396 on a flat object): absent fields keep
	// their value, null resets a field to its default.
	mergePatch
)

// setFields decodes the members of obj into the fields of *dst with the
// same JSON name; defaults (a value of dst's type) gives what null resets
// to under mergePatch. Member names match exactly (encoding/json would
// accept any case); unknown members are refused. Errors name the field.
func setFields(dst any, obj map[string]json.RawMessage, defaults any, mode fieldMode) error {
	v := reflect.ValueOf(dst).Elem()
	def := reflect.ValueOf(defaults)
	names := jsonNames(v.Type())
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		if !slices.Contains(names, k) {
			return errUnknownField(k)
		}
	}
	for i, name := range names {
		if name == "" {
			continue
		}
		raw, ok := obj[name]
		null := ok && bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
		switch {
		case !ok && mode == replaceAll:
			return errMissingField(name)
		case !ok:
		case null && mode == replaceAll:
			return errInvalidValue(name, "must not be null")
		case null:
			v.Field(i).Set(def.Field(i))
		default:
			p := reflect.New(v.Field(i).Type())
			if err := json.Unmarshal(raw, p.Interface()); err != nil {
				return errInvalidValue(name, describeJSONError(err))
			}
			v.Field(i).Set(p.Elem())
		}
	}
	return nil
}

// jsonNames returns the JSON member name of each field of struct type t,
// by field index ("" for fields JSON ignores).
func jsonNames(t reflect.Type) []string {
	names := make([]string, t.NumField())
	for i := range names {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.IsExported() && name != "-" {
			if name == "" {
				name = f.Name
			}
			names[i] = name
		}
	}
	return names
}

// changedFields lists the JSON names of the fields where a and b (values
// of one struct type) differ.
func changedFields(a, b any) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var out []string
	for i, name := range jsonNames(va.Type()) {
		if name != "" && !va.Field(i).Equal(vb.Field(i)) {
			out = append(out, name)
		}
	}
	return out
}

// describeJSONError says what is wrong with one member's value without Go
// type names.
func describeJSONError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		switch te.Type.Kind() {
		case reflect.Bool:
			return "must be true or false, not " + te.Value
		case reflect.Int, reflect.Int64:
			return "must be an integer, not " + te.Value
		case reflect.String:
			return "must be a string, not " + te.Value
		}
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return "malformed JSON"
	}
	return err.Error()
}
