"""Executable runbooks: markdown whose named code blocks are the diagnosis and mitigation steps."""
