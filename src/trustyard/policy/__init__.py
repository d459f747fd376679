"""Pure issuance rules: small named rules composed into a pipeline that yields a decision."""

from .patterns import NamePattern, parse_patterns
from .rules import Decision, IssuanceRequest, Policy

__all__ = ["Decision", "IssuanceRequest", "NamePattern", "Policy", "parse_patterns"]
