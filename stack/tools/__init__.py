"""Operator tools run against a stack: the serveops CLI, preflight, memprofile and traces."""
