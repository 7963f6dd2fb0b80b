// Package test holds deferpush's end-to-end tests: they start real
// redis-server, Kamailio and SIPp through package harness, run deferpush
// against them over loopback sockets, and check what arrives. It also holds
// the repository's rules (import directions, package docs) as tests.
package test
