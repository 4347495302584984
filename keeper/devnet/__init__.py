"""Local development chains and what builds a market on them: the deployer, fleets of seeded
vaults, the in-process chain, anvil, time/base-fee helpers, a price maker and a keeper wired to
local accounts. Used by the demo, the simulator, benchmarks and tests — never by a live keeper."""
