"""Page numbers for the API's lists (REST_FRAMEWORK["DEFAULT_PAGINATION_CLASS"])."""

from __future__ import annotations

from django.core.paginator import InvalidPage
from django.utils import timezone
from rest_framework import pagination, serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from diagnosis import selectors


class PageNumberPagination(pagination.PageNumberPagination):
    """DRF's page numbers with the answers the schema documents.

    `page` that is not a whole number from 1 (`0`, `-1`, `abc`, blank) is a 400 naming the
    parameter, like any other malformed parameter; DRF answered these with a 404 "Invalid page."
    A page past the last is a 404 that says which page is the last. `page=last` is not accepted:
    the schema says integer.
    """

    last_page_strings = ()

    def get_page_number(self, request, paginator) -> int:
        field = serializers.IntegerField(min_value=1)
        try:
            return field.run_validation(request.query_params.get(self.page_query_param, 1))
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({self.page_query_param: exc.detail}) from None

    def paginate_queryset(self, queryset, request, view=None) -> list | None:
        self.request = request
        page_size = self.get_page_size(request)
        if not page_size:
            return None
        paginator = self.django_paginator_class(queryset, page_size)
        number = self.get_page_number(request, paginator)
        try:
            self.page = paginator.page(number)
        except InvalidPage:
            raise NotFound(f"There is no page {number}; the last page is {paginator.num_pages}.") from None
        if paginator.num_pages > 1 and self.template is not None:
            self.display_page_controls = True  # the browsable API's page links
        return list(self.page)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
                parameter["description"] = "A page number from 1; past the last page the answer is 404."
        return parameters


class CaseListPagination(PageNumberPagination):
    """The case list: keyset pages by default, page numbers still answered.

    Without `page`, a page is read with a keyset condition on (created_at, id) instead of OFFSET,
    and `next` / `previous` carry an opaque `cursor`: page 200 costs what page 1 does (OFFSET made
    the database build and drop every earlier row). `page=N` answers as before, for clients that
    ask for a page by number. `count` is in every answer. A cursor that names no page (damaged, or
    given with `page`) is a 404, like a page past the last.
    """

    cursor_query_param = "cursor"

    def paginate_queryset(self, queryset, request, view=None) -> list | None:
        token = request.query_params.get(self.cursor_query_param)
        # A cursor names a page as a page number does: one that names no page is a 404, as a page
        # past the last is (and as DRF's own cursor pagination answers).
        if self.page_query_param in request.query_params:
            if token is not None:
                raise NotFound("Give either page or cursor, not both: they are two ways to name a page.")
            self.keyset = None
            return super().paginate_queryset(queryset, request, view)
        cursor = None
        if token is not None:
            try:
                cursor = selectors.WorklistCursor.decode(token, keys=selectors.NEWEST_FIRST)
            except ValueError:
                raise NotFound("There is no page at this cursor: follow the next and previous links.") from None
        self.request = request
        self.count = queryset.count()
        self.keyset = selectors.keyset_page(
            queryset, keys=selectors.NEWEST_FIRST, size=self.get_page_size(request), cursor=cursor, now=timezone.now()
        )
        return self.keyset.object_list

    def _cursor_link(self, token: str | None) -> str | None:
        if token is None:
            return None
        url = remove_query_param(self.request.build_absolute_uri(), self.page_query_param)
        return replace_query_param(url, self.cursor_query_param, token)

    def get_paginated_response(self, data) -> Response:
        if self.keyset is None:
            return super().get_paginated_response(data)
        return Response(
            {
                "count": self.count,
                "next": self._cursor_link(self.keyset.next_cursor),
                "previous": self._cursor_link(self.keyset.previous_cursor),
                "results": data,
            }
        )

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["description"] = (
                    "A page number from 1 (past the last page: 404). Without it, pages are read by "
                    "`cursor`: follow `next` and `previous`, which are faster on deep pages."
                )
        parameters.append(
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "An opaque page position from an earlier answer's `next` or `previous` link "
                "(one that names no page, or given with `page`: 404).",
                "schema": {"type": "string"},
            }
        )
        return parameters
