"""kefu: a customer-service bot engine for WeChat Mini Programs and Official Accounts."""

__version__ = "0.1.0"
