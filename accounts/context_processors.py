from accounts.middleware import support_banner_context

__all__ = ["support_banner_context"]
