"""Drop three indexes no query uses (idx_scan 0 on the seeded 10,000-client database after
every page of bench/bench_pages.py), each one more write for every row the sync inserts:
Message.thread_key (two on PostgreSQL, with its LIKE twin: 110 MB at a million messages;
threads are grouped in Python), Message.firm (message_unique_key_occurrence and
message_unlinked_idx lead with the firm) and MessageClientLink.client
(messageclientlink_newest_idx leads with the client).

Only the indexes go. Django's AlterField would also drop and re-add the foreign keys on
PostgreSQL, validating every row again under a lock that stops writes (seconds at a
million messages), and rebuild both tables on SQLite: so the database side drops the
indexes it finds on each column by introspection (whatever their generated names), and
the model state changes apart from it.
"""

import django.db.models.deletion
from django.db import migrations, models

# (model, field): the field's own single-column index, not any composite one.
UNINDEXED = [("message", "thread_key"), ("message", "firm"), ("messageclientlink", "client")]


def _own_indexes(schema_editor, table: str, column: str) -> list[str]:
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return [
        name
        for name, info in constraints.items()
        if info["index"]
        and not info["unique"]
        and not info["primary_key"]
        and info["columns"] == [column]
    ]


def indexes_drop(apps, schema_editor):
    for model_name, field_name in UNINDEXED:
        model = apps.get_model("mailsync", model_name)
        column = model._meta.get_field(field_name).column
        for name in _own_indexes(schema_editor, model._meta.db_table, column):
            schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")


def indexes_create(apps, schema_editor):
    for model_name, field_name in UNINDEXED:
        model = apps.get_model("mailsync", model_name)
        field = model._meta.get_field(field_name)
        if not _own_indexes(schema_editor, model._meta.db_table, field.column):
            for sql in schema_editor._field_indexes_sql(model, field):
                schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [
        ("mailsync", "0013_message_linked_and_link_date"),
        ("portal", "0012_client_invoice_addresses"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(indexes_drop, indexes_create)],
            state_operations=[
                migrations.AlterField(
                    model_name="message",
                    name="firm",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="portal.firm",
                    ),
                ),
                migrations.AlterField(
                    model_name="message",
                    name="thread_key",
                    field=models.CharField(max_length=64),
                ),
                migrations.AlterField(
                    model_name="messageclientlink",
                    name="client",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="portal.client",
                    ),
                ),
            ],
        ),
    ]
