from django.urls import path

from integrations.views import accounts, alerts, calls, dashboard, jobs, tokens, usage

app_name = "integrations"

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("keys/<int:key_pk>/panel/", usage.key_panel, name="key_panel"),
    path("accounts/", accounts.account_list, name="account_list"),
    path("accounts/callback/", accounts.connect_callback, name="connect_callback"),
    path("accounts/<int:pk>/", accounts.account_detail, name="account_detail"),
    path("accounts/<int:pk>/lists/", accounts.account_lists, name="account_lists"),
    path("accounts/<int:pk>/budget/", accounts.account_budget, name="account_budget"),
    path(
        "accounts/<int:pk>/lists/refresh/",
        accounts.account_lists_refresh,
        name="account_lists_refresh",
    ),
    path("accounts/<int:pk>/lists/<str:list_id>/sync/", jobs.sync_start, name="sync_start"),
    path("sync/sample.csv", jobs.sync_sample_csv_download, name="sync_sample_csv"),
    path("accounts/<int:pk>/reconnect/", accounts.reconnect, name="reconnect"),
    path("accounts/<int:pk>/disconnect/", accounts.disconnect, name="disconnect"),
    path("keys/<int:key_pk>/connect/", accounts.connect, name="connect"),
    path("jobs/", jobs.job_list, name="job_list"),
    path("jobs/<int:pk>/", jobs.job_detail, name="job_detail"),
    path("jobs/<int:pk>/progress/", jobs.job_progress, name="job_progress"),
    path("jobs/<int:pk>/rejected.csv", jobs.job_rejected_csv, name="job_rejected_csv"),
    path("jobs/<int:pk>/<str:action>/", jobs.job_action, name="job_action"),
    path("calls/", calls.call_log, name="call_log"),
    path("calls/export.csv", calls.call_export, name="call_export"),
    path("calls/<int:pk>/", calls.call_detail, name="call_detail"),
    path("tokens/", tokens.token_list, name="token_list"),
    path("tokens/create/", tokens.token_create, name="token_create"),
    path("tokens/<str:token_name>/revoke/", tokens.token_revoke, name="token_revoke"),
    path("alerts/", alerts.alert_list, name="alert_list"),
    path("alerts/add/", alerts.alert_add, name="alert_add"),
    path("alerts/<int:pk>/remove/", alerts.alert_remove, name="alert_remove"),
    path("alerts/<int:pk>/test/", alerts.alert_test, name="alert_test"),
]
