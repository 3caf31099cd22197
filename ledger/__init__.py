"""The write side: domain events, aggregates, the application that records them,
the Stripe anti-corruption layer and configuration. Imports neither `api` nor
`projections`."""
