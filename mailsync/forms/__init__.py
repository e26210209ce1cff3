"""Mail sync's forms: `mailbox` (connecting and configuring a mailbox, linking unlinked
mail) and `outgoing` (sending addresses, compose and reply)."""
