package api

import (
	"github.com/cloudwego/hertz/pkg/app"
)

// errorBody is the one shape every error leaves the API in.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field names the offending request field of a validation error.
	Field string `json:"field,omitempty"`
}

func writeError(c *app.RequestContext, status int, code, msg string) {
	c.AbortWithStatusJSON(status, errorBody{Error: errorDetail{Code: code, Message: msg}})
}
