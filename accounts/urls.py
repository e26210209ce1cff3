from django.urls import path

from accounts.views import account, firm, members, support

app_name = "accounts"

urlpatterns = [
    path("settings/", account.settings_home, name="settings"),
    path("settings/account/", account.my_account, name="my_account"),
    path("settings/firm/", firm.firm_profile, name="firm_profile"),
    path("settings/firm/editor-access/", firm.editor_access, name="editor_access"),
    path("settings/firm/editor-access/save/", firm.editor_access_save, name="editor_access_save"),
    path(
        "settings/firm/editor-access/revoke/",
        firm.editor_access_revoke,
        name="editor_access_revoke",
    ),
    path("settings/firm/audit/", firm.audit_log, name="audit_log"),
    path("settings/members/", members.members, name="members"),
    path("settings/members/invite/", members.invite, name="invite"),
    path(
        "settings/invitations/<int:invitation_pk>/revoke/",
        members.invitation_revoke_view,
        name="invitation_revoke",
    ),
    path(
        "settings/members/<int:membership_pk>/role/",
        members.membership_role,
        name="membership_role",
    ),
    path(
        "settings/members/<int:membership_pk>/remove/",
        members.membership_remove_view,
        name="membership_remove",
    ),
    path("firms/<int:membership_pk>/switch/", members.switch_firm, name="switch_firm"),
    path("invitations/<str:token>/", members.invitation_accept_view, name="invitation_accept"),
    path("support/", support.support_home, name="support"),
    path("support/grants/<int:grant_pk>/enter/", support.support_enter_view, name="support_enter"),
    path("support/exit/", support.support_exit_view, name="support_exit"),
]
