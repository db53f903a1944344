"""What Ray does not already export: custom metrics, spans, request-scoped logs, GPU and memory profiles."""
