// Package console is the operators' console: one web page (HTML, CSS and
// JavaScript modules, no build step) embedded in the binary, which package
// api serves on the admin listener at / with its files under /console/.
//
// The page talks to the admin API (/v1/...) with the bearer token the
// operator types in. The token is kept in the browser tab's
// sessionStorage and sent only in the Authorization header, never in a
// URL. The files need no token: they hold no secret. They are served with
// a strict Content-Security-Policy (scripts and styles only from this
// origin, no inline script, no eval, no framing), and the scripts write
// what the server returns only as text, so a stored message holding
// markup shows as text and runs nothing.
package console
