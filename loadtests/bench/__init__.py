"""`make bench`: serving efficiency, LLM overhead, instrumentation cost and detection latency."""
