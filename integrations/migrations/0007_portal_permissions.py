"""The portal's three permissions, and a group for each way of using the portal.

The permissions are declared on ``ApiKey.Meta.permissions``; Django creates such rows only after
the whole ``migrate`` run, so the data step creates them itself (``get_or_create``: running it
twice, or after Django has made them, changes nothing). Groups that already exist keep any
permission an administrator added to them. Reversing removes the groups and the permissions.

The names are copied here, not imported: a migration must keep meaning what it meant when
it was written.
"""

from django.db import migrations

PERMISSIONS = {
    "view_portal": "View the portal: dashboard, accounts, jobs, calls",
    "operate_portal": "Connect, disconnect, sync, run and cancel",
    "manage_keys": "Add and change API keys",
}

GROUPS = {
    "Portal viewers": ["view_portal"],
    "Portal operators": ["view_portal", "operate_portal"],
    "Key managers": ["view_portal", "operate_portal", "manage_keys"],
}


def portal_groups_create(apps, schema_editor):
    db = schema_editor.connection.alias
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    content_type, _ = ContentType.objects.using(db).get_or_create(
        app_label="integrations", model="apikey"
    )
    permissions = {}
    for codename, name in PERMISSIONS.items():
        permissions[codename], _ = Permission.objects.using(db).get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )
    for group_name, codenames in GROUPS.items():
        group, _ = Group.objects.using(db).get_or_create(name=group_name)
        group.permissions.add(*(permissions[codename] for codename in codenames))


def portal_groups_delete(apps, schema_editor):
    db = schema_editor.connection.alias
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    Group.objects.using(db).filter(name__in=GROUPS).delete()
    Permission.objects.using(db).filter(
        content_type__app_label="integrations",
        content_type__model="apikey",
        codename__in=PERMISSIONS,
    ).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("integrations", "0006_api_calls_apart"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="apikey",
            options={
                "ordering": ["name"],
                "permissions": [
                    ("view_portal", "View the portal: dashboard, accounts, jobs, calls"),
                    ("operate_portal", "Connect, disconnect, sync, run and cancel"),
                    ("manage_keys", "Add and change API keys"),
                ],
                "verbose_name": "API key",
            },
        ),
        migrations.RunPython(portal_groups_create, portal_groups_delete),
    ]
