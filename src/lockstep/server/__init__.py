"""`lockstep serve`: the HTTP API, the live status page and the inbound webhooks over the same
store, repositories and data functions the CLI uses."""
