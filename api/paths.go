package api

import (
	"context"
	"net/url"
	"strings"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/protocol/consts"
)

// checkPath refuses, before routing, a request path that the HTTP layer
// would rewrite: hertz decodes %2F and resolves "." and ".." segments
// before it routes, so /v1/users/x/../../policy would reach the policy
// handler, and a proxy in front that allows only /v1/users/ would be
// passed by. deferpush serves no path with a dot segment (plain or
// %-encoded) and no %2F except inside the AOR of /v1/users/{aor}/...: any
// such path gets 400 saying why, whatever its method and token.
func checkPath(ctx context.Context, c *app.RequestContext) {
	if problem := pathProblem(string(c.Request.URI().PathOriginal())); problem != "" {
		writeError(c, consts.StatusBadRequest, "invalid_path", problem)
		return
	}
	c.Next(ctx)
}

// pathProblem says what is wrong with the raw request path p, or "".
func pathProblem(p string) string {
	// The AOR segment of a user resource may hold %2F (a '/' of its user
	// part); no other segment may.
	aor := -1
	if strings.HasPrefix(p, "/v1/users/") {
		aor = 3
	}
	for i, seg := range strings.Split(p, "/") {
		if i != aor && strings.Contains(strings.ToLower(seg), "%2f") {
			return "the path has an encoded slash (%2F) outside the AOR segment; send the path as it is meant"
		}
		u, err := url.PathUnescape(seg)
		if err != nil {
			continue // the router answers what it makes of it
		}
		// A %2F inside the AOR is decoded before routing too: a dot
		// segment hidden there would be resolved as well.
		for part := range strings.SplitSeq(u, "/") {
			if part == "." || part == ".." {
				return "the path has a '" + part + "' segment (dot segments are not resolved); send the path as it is meant"
			}
		}
	}
	return ""
}
