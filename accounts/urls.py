from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("settings/", views.settings_home, name="settings"),
    path("settings/members/", views.members, name="members"),
    path("settings/members/invite/", views.invite, name="invite"),
    path(
        "settings/invitations/<int:invitation_pk>/revoke/",
        views.invitation_revoke_view,
        name="invitation_revoke",
    ),
    path(
        "settings/members/<int:membership_pk>/role/",
        views.membership_role,
        name="membership_role",
    ),
    path(
        "settings/members/<int:membership_pk>/remove/",
        views.membership_remove_view,
        name="membership_remove",
    ),
    path("firms/<int:membership_pk>/switch/", views.switch_firm, name="switch_firm"),
    path("invitations/<str:token>/", views.invitation_accept_view, name="invitation_accept"),
]
