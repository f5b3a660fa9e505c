"""Events, whoever found them: webhook deliveries and polled records become the same
`Event` with the same key, so the inbox stores each once."""
