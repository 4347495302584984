"""The simulator: seeded scenarios replayed through the real contracts, keeper in the loop."""
