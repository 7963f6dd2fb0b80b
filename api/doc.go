// Package api is deferpush's HTTP edge, served by hertz on two listeners:
//
//   - the hooks listener, called by the SIP proxy's route script
//     (/hooks/kamailio/..., /hooks/opensips/...), authenticated by a shared
//     token;
//   - the admin listener for operators (/v1/...), authenticated by bearer
//     tokens with a role, with /metrics and the OpenAPI document.
//
// Both answer /healthz (the process is up) and /readyz (the store answers).
// Errors leave this package in exactly one JSON shape,
// {"error":{"code":"...","message":"..."}}, with the HTTP status that fits.
package api
