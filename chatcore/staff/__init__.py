"""Staff tools over the log: suites, the regression gate, replay, simulated visitors, alerts."""
