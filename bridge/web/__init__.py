"""All of Flask: the webhook, /healthz, /metrics, the error answers and the config page."""
