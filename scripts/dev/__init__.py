"""Developer tools, not shipped: benchmarks, load generator, synthetic data,
the demo and the localstripe launcher."""
