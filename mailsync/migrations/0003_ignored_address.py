# Written for the "unlinked mail" page: addresses a member chose to leave unlinked.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('mailsync', '0002_folder_message_count'),
        ('portal', '0002_heartbeat'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='IgnoredAddress',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('normalized', models.CharField(max_length=320, verbose_name='email address')),
                ('created', models.DateTimeField(auto_now_add=True)),
                ('firm', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='portal.firm')),
                ('ignored_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'ignored address',
                'verbose_name_plural': 'ignored addresses',
                'ordering': ['normalized'],
                'constraints': [models.UniqueConstraint(fields=('firm', 'normalized'), name='ignoredaddress_unique')],
            },
        ),
    ]
