"""gunicorn settings for the web process (Procfile and `instantly-ghl-bridge run` use the same)."""

import os

from bridge.config import DEFAULT_INSTANCE

# All interfaces, as a platform's router needs; `make run` sets HOST=127.0.0.1 on a laptop.
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gthread, except that the event loop reads each request whole before a thread takes it,
# so slow clients cannot hold the threads (bridge/web/buffered_worker.py).
worker_class = "bridge.web.buffered_worker.BufferedThreadWorker"
# A webhook thread spends part of each request waiting for the disk (the fsync before its
# 202), and the deliveries waiting together share one commit: more threads, bigger
# commits.
threads = int(os.environ.get("WEB_THREADS", "8"))
# Webhook bodies are small and answered at once; a slow client must not hold a worker.
timeout = 30
graceful_timeout = 20
accesslog = "-" if os.environ.get("BRIDGE_ACCESS_LOG", "1") == "1" else None
# gunicorn's default format, less what can carry a secret or a lead's address: the query
# string (%(r)s is the whole request line) and the Referer.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(a)s"'
# gunicorn's control socket is one path per user (~/.gunicorn/gunicorn.ctl), shared by every
# gunicorn that user runs; nothing here uses it.
control_socket_disable = True

# Webhook outcome counters are per process; prometheus-client's multiprocess mode keeps
# them in files here so /metrics adds up every web process. Set before the app (and so
# prometheus_client) is imported in the workers.
_metrics_dir = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR",
    os.path.join(os.environ.get("BRIDGE_INSTANCE_PATH") or str(DEFAULT_INSTANCE), "metrics"),
)


def on_starting(server):
    """Counters start at zero with each start of the web app (Prometheus handles resets)."""
    os.makedirs(_metrics_dir, exist_ok=True)
    for name in os.listdir(_metrics_dir):
        if name.endswith(".db"):
            os.unlink(os.path.join(_metrics_dir, name))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
