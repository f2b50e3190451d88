"""Celery application: the distributed engine that runs inference jobs on worker machines.

All configuration lives in settings.py under the CELERY_ prefix, next to the job time limits
it must agree with.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xnet_site.settings")

app = Celery("xnet")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
