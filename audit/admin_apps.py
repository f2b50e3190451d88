"""The Django admin app, with XNET's audited admin site as its default site.

In INSTALLED_APPS in place of "django.contrib.admin". A module of its own: Django picks an app's
configuration from its apps.py, and a second AppConfig there would hide AuditConfig.
"""

from django.contrib.admin.apps import AdminConfig


class AuditedAdminConfig(AdminConfig):
    default_site = "audit.admin_site.AuditedAdminSite"
