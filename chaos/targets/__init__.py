"""Serve apps that exist only to be broken by an experiment."""
