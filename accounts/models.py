"""Departments and their users.

Every clinical object belongs to a department through its patient; a user sees only their own
department's data. Superusers are site admins and belong to no department.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models


class Department(models.Model):
    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class User(AbstractUser):
    class Role(models.TextChoices):
        RADIOLOGIST = "radiologist", "Radiologist"
        DEPARTMENT_ADMIN = "department_admin", "Department admin"

    department = models.ForeignKey(Department, null=True, blank=True, on_delete=models.PROTECT, related_name="users")
    role = models.CharField(max_length=32, choices=Role.choices, default=Role.RADIOLOGIST)

    def clean(self) -> None:
        super().clean()
        if not self.is_superuser and self.department_id is None:
            raise ValidationError({"department": "Every user except site admins belongs to a department."})

    @property
    def is_department_admin(self) -> bool:
        return self.is_active and self.department_id is not None and self.role == self.Role.DEPARTMENT_ADMIN

    def can_manage(self, other: User) -> bool:
        """A department admin manages the users of their own department, not themselves."""
        return self.is_department_admin and other.department_id == self.department_id and other.pk != self.pk
