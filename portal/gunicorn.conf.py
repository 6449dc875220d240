"""gunicorn's settings for the portal: `./dev up` starts it with this file and
bench/portal_load.py measures it (README, "Deployment: serving the portal").

The portal's requests are short and mostly wait on PostgreSQL (a poll is three to five small
queries), so each process runs several threads: while one waits on the database another
uses the core. Processes give the cores; threads hide the waits; persistent database
connections (DJANGO_CONN_MAX_AGE) spare each request a new PostgreSQL backend.

Every value can be set from the environment for a bigger host; the bind address, pid file and
logs stay on the command line (`dev` gives them).
"""

import os

# One process per core, plus one so a core stays busy while another process is in a GC pause
# or a slow render. On 2 cores: 3 processes x 4 threads = 12 requests in progress at once and
# 12 PostgreSQL connections, which the database serves without queueing.
workers = int(os.environ.get("AXLE_WEB_WORKERS", (os.cpu_count() or 1) + 1))
worker_class = "gthread"
threads = int(os.environ.get("AXLE_WEB_THREADS", "4"))
# Browsers keep their connection between a page's polls (every 5 s): keep it open for two of
# them, so a poll neither opens a new one nor races the server closing the old one (gthread
# parks an idle connection in its poller, not in a thread).
keepalive = int(os.environ.get("AXLE_WEB_KEEPALIVE", "10"))
# Requests that wait for the outside (a cluster's log over SSH, MLflow) may take a while.
timeout = int(os.environ.get("AXLE_WEB_TIMEOUT", "120"))
graceful_timeout = 30
# A process is replaced after this many requests (a slow leak never grows for ever); the
# jitter keeps the processes from restarting together.
max_requests = int(os.environ.get("AXLE_WEB_MAX_REQUESTS", "20000"))
max_requests_jitter = max_requests // 10


def post_worker_init(worker):
    """Once a process has loaded the portal, its startup heap (Django, the apps, Optuna, MLflow's
    client) lives as long as it does: frozen, a full garbage collection scans only what requests
    allocate. The task worker does the same (apps/jobs/apps.py), where it was measured; here it
    was not."""
    import gc

    gc.collect()
    gc.freeze()
