"""gunicorn settings for XNET's web servers (README, "Production"):

    gunicorn -c python:xnet_site.gunicorn_conf --workers 4 --bind 127.0.0.1:8000 xnet_site.wsgi

Only what protects patient data lives here; workers, bind address and timeouts stay on the
command line, which overrides this file.
"""

import os

# The access log leaves out the query string and the Referer header: searches carry record
# numbers and names in the query string (worklist and patient search, the API's ?mrn=), and the
# next request's Referer repeats the previous address with its query. Logged: client address,
# time, method, path, protocol, status, response bytes, duration and user agent.
accesslog = "-"
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'

# Request line and headers: gunicorn answers 400 above these before Django sees the request.
# (gunicorn has no body limit: the proxy's client_max_body_size and Django's
# xnet_site.security.RequestBodyLimitMiddleware refuse large bodies.)
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190


def on_starting(server) -> None:
    """Whatever the web processes write (temporary upload files included) is readable by their
    user only. gunicorn's own `umask` setting covers only its sockets and heartbeat files; this
    hook runs in the master after any daemonizing, and the workers inherit it."""
    os.umask(0o077)
