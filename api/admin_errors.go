package api

import (
	"context"
	"errors"
	"fmt"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"

	"github.com/deferpush/deferpush/plugin"
)

// apiError is an admin API error with its place on the wire. The
// constructors below and adminFail are the one place where admin API
// errors become HTTP statuses and codes.
type apiError struct {
	status int
	code   string
	field  string // the offending request field or query parameter, if any
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errUnauthorized(msg string) *apiError {
	return &apiError{status: consts.StatusUnauthorized, code: "unauthorized", msg: msg}
}

func errForbidden(msg string) *apiError {
	return &apiError{status: consts.StatusForbidden, code: "forbidden", msg: msg}
}

func errNoResource(path string) *apiError {
	return &apiError{status: consts.StatusNotFound, code: "not_found", msg: "no such resource: " + path}
}

func errMethod(method, path string) *apiError {
	return &apiError{status: consts.StatusMethodNotAllowed, code: "method_not_allowed",
		msg: "method " + method + " not allowed on " + path}
}

// errInvalidJSON: the body is not one JSON object.
func errInvalidJSON(msg string) *apiError {
	return &apiError{status: consts.StatusBadRequest, code: "invalid_json", msg: msg}
}

func errUnknownField(field string) *apiError {
	return &apiError{status: consts.StatusBadRequest, code: "unknown_field", field: field,
		msg: fmt.Sprintf("unknown field %q", field)}
}

func errMissingField(field string) *apiError {
	return &apiError{status: consts.StatusBadRequest, code: "missing_field", field: field,
		msg: fmt.Sprintf("missing field %q: PUT replaces the whole resource (use PATCH to change some fields)", field)}
}

// errInvalidValue: a field is present but its value is wrong (type or
// range); plugin's *FieldError maps here too.
func errInvalidValue(field, problem string) *apiError {
	return &apiError{status: consts.StatusBadRequest, code: "invalid_value", field: field,
		msg: fmt.Sprintf("invalid %s: %s", field, problem)}
}

func errInvalidQuery(param, problem string) *apiError {
	return &apiError{status: consts.StatusBadRequest, code: "invalid_query", field: param,
		msg: fmt.Sprintf("query parameter %s: %s", param, problem)}
}

func errInvalidAOR(err error) *apiError {
	return &apiError{status: consts.StatusBadRequest, code: "invalid_aor", field: "aor", msg: err.Error()}
}

func errTooLarge(limit int) *apiError {
	return &apiError{status: consts.StatusRequestEntityTooLarge, code: "body_too_large",
		msg: fmt.Sprintf("request body larger than %d bytes", limit)}
}

func errMediaType(got string, want ...string) *apiError {
	if got == "" {
		got = "none"
	}
	return &apiError{status: consts.StatusUnsupportedMediaType, code: "unsupported_media_type",
		msg: fmt.Sprintf("Content-Type %s not supported: send %v", got, want)}
}

// errConflict: the request is valid but the resource's state forbids it
// (push switched off or held, no registration to push to).
func errConflict(code, msg string) *apiError {
	return &apiError{status: consts.StatusConflict, code: code, msg: msg}
}

// errPrecondition: If-Match or If-None-Match is false (RFC 9110 §13.1).
func errPrecondition(msg string) *apiError {
	return &apiError{status: consts.StatusPreconditionFailed, code: "precondition_failed", msg: msg}
}

// errExceedsPolicy: a well-formed value the operator policy does not allow.
func errExceedsPolicy(field, msg string) *apiError {
	return &apiError{status: consts.StatusUnprocessableEntity, code: "exceeds_policy", field: field, msg: msg}
}

// adminFail writes err in the one error shape. Errors from plugin and the
// store are mapped here; anything unexpected is a 500 whose detail goes to
// the log only.
func (a *admin) fail(ctx context.Context, c *app.RequestContext, err error) {
	var ae *apiError
	var fe *plugin.FieldError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &fe):
		ae = errInvalidValue(fe.Field, fe.Problem)
	case errors.Is(err, plugin.ErrBadAOR):
		ae = errInvalidAOR(err)
	case errors.Is(err, plugin.ErrNotFound):
		// The store's error chain names its internals: not for the client.
		ae = &apiError{status: consts.StatusNotFound, code: "not_found", msg: "not found: " + string(c.Path())}
	case errors.Is(err, plugin.ErrLeaseLost):
		ae = errConflict("busy", "a push owns this mailbox right now; try again")
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		ae = &apiError{status: consts.StatusServiceUnavailable, code: "unavailable",
			msg: fmt.Sprintf("the store did not answer within %v; try again", adminTimeout)}
	case errors.Is(err, plugin.ErrStoreUnavailable):
		// The client's error names the store's address: the log has it.
		a.log.WarnContext(ctx, "admin request failed: store unavailable", "method", string(c.Method()), "path", string(c.Path()), "err", err)
		ae = &apiError{status: consts.StatusServiceUnavailable, code: "unavailable", msg: "the store cannot be reached; try again"}
	default:
		a.log.ErrorContext(ctx, "admin request failed", "method", string(c.Method()), "path", string(c.Path()), "err", err)
		ae = &apiError{status: consts.StatusInternalServerError, code: "internal", msg: "internal error; the server log has the details"}
	}
	switch ae.status {
	case consts.StatusUnauthorized:
		c.Response.Header.Set("WWW-Authenticate", `Bearer realm="deferpush admin"`)
	case consts.StatusServiceUnavailable:
		// RFC 9110 §10.2.3: a store failing over or restarting answers
		// again within seconds.
		c.Response.Header.Set("Retry-After", "1")
	}
	c.Response.Header.Del("ETag") // set by a handler before it failed: an error is no representation
	c.Abort()
	_ = reply(c, ae.status, errorBody{Error: errorDetail{Code: ae.code, Message: ae.msg, Field: ae.field}})
}
