"""Sign-in for people: Django's ModelBackend, refusing service accounts."""

from __future__ import annotations

from django.contrib.auth.backends import ModelBackend


class PersonBackend(ModelBackend):
    """A service account (User.is_service_account, e.g. the DICOM intake) is active so that what
    it filed stays attributed, but no password, however it got one, signs it in, and a session
    already holding it is not honoured."""

    def user_can_authenticate(self, user) -> bool:
        return super().user_can_authenticate(user) and not getattr(user, "is_service_account", False)

    def get_user(self, user_id):
        user = super().get_user(user_id)
        return None if user is not None and user.is_service_account else user
