"""Running a training run: the spec API, the step loop both prover and verifier run, RNG capture,
the batch sampler, execution settings, and exact mode's rounding numerics."""
