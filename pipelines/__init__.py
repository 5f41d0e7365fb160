"""``edgekit pipeline``: data → train → optimize → convert → evaluate → gate → sign → publish → rollout, declared in
one TOML file, each step one cached function with typed inputs and outputs (docs/pipeline.md).

It imports the converters and the fleet, so it is a package of its own (never imported by either of them, never
importing the device agent). Nothing here imports TensorFlow at module level.
"""
