package api

import "github.com/cloudwego/hertz/pkg/app/server"

// routeHooks registers the proxy hooks (/hooks/kamailio/..., /hooks/opensips/...).
func (s *Server) routeHooks(h *server.Hertz) {}
