from __future__ import annotations

from django.contrib import messages
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from portal.forms import DocumentUploadForm
from portal.services import document_get_or_store
from portal.tenancy import get_client_for_member, get_document_for_member, member_required
from portal.views.clients import _detail


@member_required
@require_POST
def document_upload(request: HttpRequest, client_pk: int) -> HttpResponse:
    client = get_client_for_member(request, client_pk)
    form = DocumentUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        response = _detail(request, client.pk, "documents", upload_form=form)
        response.status_code = 400
        return response
    document, created = document_get_or_store(
        client=client, upload=form.cleaned_data["file"], uploaded_by=request.user
    )
    if created:
        messages.success(request, _("“%(name)s” uploaded.") % {"name": document.original_name})
    else:
        messages.info(
            request,
            _("This client already has this file, as “%(name)s”.")
            % {"name": document.original_name},
        )
    return redirect(reverse("portal:client_documents", args=[client.pk]))


@member_required
def document_download(request: HttpRequest, client_pk: int, document_pk: int) -> HttpResponse:
    client = get_client_for_member(request, client_pk)
    document = get_document_for_member(request, client, document_pk)
    return FileResponse(
        document.file.open("rb"),
        as_attachment=True,
        filename=document.original_name,
        content_type=document.content_type or "application/octet-stream",
    )
