"""trustyard: an internal PKI for microservices."""

__version__ = "0.1.0"
