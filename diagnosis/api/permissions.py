from rest_framework.permissions import BasePermission


class IsDepartmentMember(BasePermission):
    """Authenticated, active and in a department: the API serves clinical data only to them."""

    message = "Your account belongs to no department."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_active and user.department_id)
