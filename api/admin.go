package api

import "github.com/cloudwego/hertz/pkg/app/server"

// routeAdmin registers the admin API (/v1/...), /metrics and the OpenAPI
// document.
func (s *Server) routeAdmin(h *server.Hertz) {}
