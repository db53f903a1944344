"""`make loadtest SHAPE=sweep`: an open-loop rate sweep per route family that finds the knee.

Imports `stack` only; `loadtests/run.py` dispatches to `run.main`.
"""
