"""The compute-node side of tvseg: stage files to scratch, run stages, journal outcomes.

Importing this package is cheap: stages (and TensorFlow) load only inside a worker.
"""
