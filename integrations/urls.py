from django.urls import path

from integrations import views

app_name = "integrations"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("accounts/", views.account_list, name="account_list"),
    path("accounts/callback/", views.connect_callback, name="connect_callback"),
    path("accounts/<int:pk>/", views.account_detail, name="account_detail"),
    path("accounts/<int:pk>/lists/", views.account_lists, name="account_lists"),
    path("accounts/<int:pk>/lists/<str:list_id>/sync/", views.sync_start, name="sync_start"),
    path("accounts/<int:pk>/reconnect/", views.reconnect, name="reconnect"),
    path("accounts/<int:pk>/disconnect/", views.disconnect, name="disconnect"),
    path("keys/<int:key_pk>/connect/", views.connect, name="connect"),
    path("jobs/", views.job_list, name="job_list"),
    path("jobs/<int:pk>/", views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/progress/", views.job_progress, name="job_progress"),
    path("jobs/<int:pk>/rejected.csv", views.job_rejected_csv, name="job_rejected_csv"),
    path("jobs/<int:pk>/<str:action>/", views.job_action, name="job_action"),
    path("calls/", views.call_log, name="call_log"),
]
