"""Page numbers for the API's lists (REST_FRAMEWORK["DEFAULT_PAGINATION_CLASS"])."""

from __future__ import annotations

from django.core.paginator import InvalidPage
from rest_framework import pagination, serializers
from rest_framework.exceptions import NotFound


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
