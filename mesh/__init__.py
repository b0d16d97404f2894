"""Pieces shared by the router and the tier servers: gRPC status helpers and server lifecycle."""
