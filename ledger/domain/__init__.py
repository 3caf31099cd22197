"""The domain: aggregates and their events, value types, the status vocabulary.
Pure Python on `eventsourcing.domain`; nothing of Stripe, HTTP or SQL.

Each aggregate and event class names its `TOPIC`: the name it is stored under in
the log, fixed when it was first written (`ledger.receipt:Receipt.Received`),
so that moving a module never orphans the events already stored."""
