"""Adversarial tests: a bad-input matrix over both transports, properties of the sealed
envelope, the proxy's OpenAPI document under schemathesis, and what a curious proxy can see."""
