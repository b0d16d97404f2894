"""A gRPC server for one tier: one model at one quantization, served by one engine."""
