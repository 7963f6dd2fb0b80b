// Package harness starts the real servers deferpush's tests talk to —
// redis-server (standalone and a 3-node cluster), Kamailio, OpenSIPS and
// SIPp — on free loopback ports, waits for each to be ready by polling it,
// stops it by PID when the test ends, and prints its log when the test
// failed.
//
// A missing binary fails the test under CI=true, naming the Debian package
// that provides it, and skips it otherwise, so a developer without the
// packages can still run the unit tests while CI can never pass by skipping.
// Debian has no OpenSIPS package: OpenSIPS is the build that
// scripts/install-test-deps.sh caches from ../shared/opensips, or an
// installed 3.4.
package harness
