"""The database cache's table, made by ``migrate``.

The portal's cache (the login and Connect rate limits, and the stand-in while Redis is down)
is Django's database cache. Its table used to exist only after ``createcachetable``, a step a
deploy that runs ``migrate`` (as every Django deploy does) would miss; this migration makes it.
``createcachetable`` skips tables that exist, so running it again, or after the command, changes
nothing. Reversing leaves the table: it holds nothing that outlives a minute.
"""

from django.core.management import call_command
from django.db import migrations


def cache_tables_create(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("integrations", "0007_portal_permissions")]

    operations = [migrations.RunPython(cache_tables_create, migrations.RunPython.noop)]
