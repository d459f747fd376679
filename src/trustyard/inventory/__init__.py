"""Inventory: find certificates and keys in files, keystores, manifests and live
endpoints, then correlate them across locations and environments into findings.

    sources    files and directories -> Items (PEM, DER, PKCS#7, PKCS#12, JKS, Kubernetes)
    endpoints  host:port[/sni] -> the chain the server actually sends
    insecure   code, configuration and scripts that switch certificate verification off
    findings   Items -> Findings (stable codes, severities, every location involved)
    report     table, JSON, CSV, Prometheus text
"""

from .model import CertItem, Finding, Inventory, KeyItem, Severity
from .scan import ScanOptions, run_scan, where

__all__ = ["CertItem", "Finding", "Inventory", "KeyItem", "ScanOptions", "Severity", "run_scan", "where"]
