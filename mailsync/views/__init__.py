"""Mail sync's views, one module per screen family.

- `mailbox`: connecting a mailbox with a password, its folders, status, stop/remove, the
  client's email tab and the unlinked-mail screens.
- `oauth`: connecting a mailbox through a provider's OAuth (allauth adapter included).
- `outgoing`: sending from a member's own mailbox: sending addresses, compose and reply.
"""
