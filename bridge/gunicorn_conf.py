"""gunicorn settings for the web process (Procfile and `bridge run` use the same)."""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
# Webhook bodies are small and answered at once; a slow client must not hold a worker.
timeout = 30
graceful_timeout = 20
accesslog = "-" if os.environ.get("BRIDGE_ACCESS_LOG", "1") == "1" else None
