"""Move every message's raw mail from its row into the blob store (portal.blobs).

Batched and restartable: each batch of rows is written to the store first, then its rows
are updated (sha256 set, raw cleared) in one transaction, and the migration is not atomic
as a whole, so a run stopped midway keeps the batches it finished and the next run goes on
from the rows still holding their raw mail. A crash between a batch's blob writes and its
commit leaves orphan blobs, which the next run reuses and the sweep would delete.
"""

from django.db import migrations, transaction

BATCH = 200


def raw_to_blobs(apps, schema_editor):
    from portal.blobs import blob_put, blobs_confirm

    Message = apps.get_model("mailsync", "Message")
    pending = Message.objects.filter(raw_sha256="").exclude(raw=None).order_by("pk")
    last_pk = 0
    while True:
        rows = list(pending.filter(pk__gt=last_pk).values_list("pk", "raw")[:BATCH])
        if not rows:
            return
        stored = [(pk, bytes(raw), blob_put(bytes(raw))) for pk, raw in rows]
        with transaction.atomic():
            blobs_confirm((ref, data) for _pk, data, ref in stored)
            for pk, _data, ref in stored:
                Message.objects.filter(pk=pk, raw_sha256="").update(
                    raw_sha256=ref.sha256, size=ref.size, raw=None
                )
        last_pk = rows[-1][0]


def blobs_to_raw(apps, schema_editor):
    from portal.blobs import blob_read

    Message = apps.get_model("mailsync", "Message")
    pending = Message.objects.exclude(raw_sha256="").filter(raw=None).order_by("pk")
    last_pk = 0
    while True:
        rows = list(pending.filter(pk__gt=last_pk).values_list("pk", "raw_sha256")[:BATCH])
        if not rows:
            return
        with transaction.atomic():
            for pk, sha256 in rows:
                Message.objects.filter(pk=pk).update(raw=blob_read(sha256), raw_sha256="")
        last_pk = rows[-1][0]


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("mailsync", "0008_message_raw_sha256"),
    ]

    operations = [
        migrations.RunPython(raw_to_blobs, blobs_to_raw, elidable=True),
    ]
