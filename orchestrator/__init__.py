"""The login-node side of tvseg: scan, shard, submit, fold journals, report, retry.

Import direction: cli -> orchestration -> (manifest, executor, inputs, sharding).
Nothing here imports TensorFlow.
"""
