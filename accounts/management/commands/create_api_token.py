"""Create an API token for a user from the command line (what `drf_create_token` did, hashed now).

The key is printed once: only its SHA-256 is stored. Department admins can do the same on the
API tokens page; this is for site operators and for accounts without a department admin.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import ApiToken, User
from accounts.services import api_token_create, api_token_revoke


class Command(BaseCommand):
    help = "Create an API token acting as USERNAME and print its key (shown this once), or revoke tokens."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="Command-line token", help="What will use the token.")
        parser.add_argument(
            "--days",
            type=int,
            default=settings.XNET_API_TOKEN_DAYS,
            help=f"Lifetime in days (at most XNET_API_TOKEN_MAX_DAYS, {settings.XNET_API_TOKEN_MAX_DAYS}).",
        )
        parser.add_argument("--revoke-all", action="store_true", help="Revoke every token of the user instead.")

    def handle(self, *args, username: str, name: str, days: int, revoke_all: bool, **options) -> None:
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        if revoke_all:
            tokens = list(ApiToken.objects.filter(user=user, revoked_at__isnull=True).select_related("user"))
            for token in tokens:
                api_token_revoke(token=token, revoked_by=None)
            self.stdout.write(f"Revoked {len(tokens)} token(s) of {username}.")
            return
        try:
            token, key = api_token_create(user=user, name=name, days=days, created_by=None)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stderr.write(f"Token {token.name!r} for {username}, valid until {token.expires_at:%Y-%m-%d %H:%M %Z}:")
        self.stdout.write(key)
