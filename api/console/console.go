package console

import (
	"embed"
	"io/fs"
	"path"
	"strings"
)

//go:embed static
var static embed.FS

// Prefix is the path under which the console's files (scripts, styles,
// icon) are served; the page itself is served at "/".
const Prefix = "/console/"

// File is one of the console's files, ready to serve.
type File struct {
	Body        []byte
	ContentType string
}

// contentTypes are the types of the files the console ships; a file of
// another type is not served.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// Lookup returns the file served at the request path p: "/" is the page,
// Prefix+name one of its files.
func Lookup(p string) (File, bool) {
	name := "index.html"
	if p != "/" {
		rest, ok := strings.CutPrefix(p, Prefix)
		if !ok || rest == "" || strings.Contains(rest, "/") || !fs.ValidPath(rest) {
			return File{}, false
		}
		name = rest
	}
	ct, ok := contentTypes[path.Ext(name)]
	if !ok {
		return File{}, false
	}
	b, err := fs.ReadFile(static, "static/"+name)
	if err != nil {
		return File{}, false
	}
	return File{Body: b, ContentType: ct}, true
}

// CSP is the Content-Security-Policy of every console file: everything
// from this origin only, no inline script or style, no eval, no plugins,
// no framing, and forms that cannot be submitted (the token form is
// handled by the script; without it the token would go nowhere).
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Headers are the response headers every console file is served with.
func Headers() [][2]string {
	return [][2]string{
		{"Content-Security-Policy", CSP},
		{"X-Content-Type-Options", "nosniff"},
		{"X-Frame-Options", "DENY"},
		{"Referrer-Policy", "no-referrer"},
		{"Cache-Control", "no-cache"},
	}
}
