"""The machinery under the data engine: the dataset store, running a round, the training loop,
evaluation, the synthetic world, exports and the report. Importing it changes nothing: entry
points (the CLI, flows, tests, benchmarks) apply ``engine.settings`` themselves."""
