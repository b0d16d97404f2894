"""qarr profile: measure each tier (latency, throughput, memory, accuracy) and write the profiles the router reads."""
