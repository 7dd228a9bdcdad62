"""Tests of atoma_lab.protocol: wire models and the confidential envelope."""
