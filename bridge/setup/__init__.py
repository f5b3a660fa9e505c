"""The checks and set-up steps the CLI and the config page share: doctor, webhook
subscriptions, health facts."""
