"""`make scorecard`: the alert-quality scorecard (recall, detection, reset, precision, leak watch)."""
