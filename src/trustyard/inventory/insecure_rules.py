"""The table of constructs that switch certificate verification off, per language, with the fix
for each; and how a file's language is told (name, extension, shebang) and what its comments
and strings look like. The engine that applies them is ``insecure.py``.

A rule names the literal its file must hold (``trigger``, lower case: the prefilter looks for
it in the lowered bytes), the languages it applies to (``None``: every language, for command
lines and environment variables, which turn up in scripts, Dockerfiles, YAML and strings of
code alike), and which view of the text its pattern reads: ``code`` (comments blanked) or
``bare`` (string contents blanked too, for constructs that are code, so a log message that
quotes ``verify=False`` is not one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath


@dataclass(frozen=True)
class Rule:
    construct: str
    trigger: str
    pattern: re.Pattern[str]
    fix: str
    langs: frozenset[str] | None = None
    view: str = "code"
    skip_imports: bool = False  # Java/Kotlin: `import ...NoopHostnameVerifier;` uses nothing yet
    # The pattern over the raw text finds a superset of what it finds over its view (blanking
    # comments and strings only removes text), so a file where it finds nothing needs no views.
    # Not so where a comment may sit inside the construct (`{ // trust all }`): those say False.
    raw_gate: bool = True


BUNDLE = ("(DIR/ca.crt: the trust bundle `trustyard agent --out DIR` keeps current; once by hand: "
          "`trustyard roots --ca-url URL --fingerprint SHA256 --out ca.crt`)")
ISSUE = "give the server a certificate for its name: `trustyard issue NAME --token TOKEN --ca-url URL --out DIR`"

PY = frozenset({"python"})
GO = frozenset({"go"})
JS = frozenset({"javascript", "json", "yaml"})
JVM = frozenset({"java", "kotlin"})
CONFIG = frozenset({"yaml", "json", "toml", "ini"})

# An environment variable set to a value: NAME=0, NAME: "0", "NAME": "0", ["NAME"] = "0",
# ("NAME", "0"), ENV NAME 0, process.env.NAME = '0'.
_SET = r"""\b{name}\b["']?\]?[ \t]*(?:=|:|,|[ \t])[ \t]*["']?(?:{values})\b"""
# ... and the Kubernetes form: `- name: NAME` with `value: "0"` on the next line.
_K8S_ENV = r"""\bname:[ \t]*["']?{name}["']?[ \t]*\n[ \t]*(?:-[ \t]*)?value:[ \t]*["']?(?:{values})\b"""


def _env(construct: str, name: str, values: str, fix: str) -> list[Rule]:
    return [Rule(construct, name.lower(), re.compile(_SET.format(name=name, values=values), re.I), fix),
            Rule(construct, name.lower(), re.compile(_K8S_ENV.format(name=name, values=values), re.I), fix,
                 frozenset({"yaml"}))]


def _rx(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


RULES: tuple[Rule, ...] = (
    # ---- Python
    Rule("verify=False", "verify", _rx(r"\bverify\s*=\s*False\b"),
         f'verify="DIR/ca.crt" {BUNDLE}', PY, "bare"),
    Rule("verify_ssl=False (aiohttp)", "verify_ssl", _rx(r"\bverify_ssl\s*=\s*False\b"),
         'ssl=ssl.create_default_context(cafile="DIR/ca.crt") ' + BUNDLE, PY, "bare"),
    Rule("ssl=False (aiohttp)", "ssl",
         _rx(r"(?:TCPConnector|ClientSession|\.(?:get|post|put|patch|delete|head|request|ws_connect))\("
             r"[^\n]*?\b(?:verify_)?ssl\s*=\s*False\b"),
         'ssl=ssl.create_default_context(cafile="DIR/ca.crt") ' + BUNDLE, PY, "bare"),
    Rule("ssl._create_unverified_context", "_create_unverified_context", _rx(r"\b_create_unverified_context\b"),
         'ssl.create_default_context(cafile="DIR/ca.crt") ' + BUNDLE, PY, "bare"),
    Rule("urllib3 cert_reqs NONE", "cert_reqs", _rx(r"""\bcert_reqs\s*=\s*["'](?:CERT_)?NONE["']"""),
         'cert_reqs="CERT_REQUIRED", ca_certs="DIR/ca.crt" ' + BUNDLE, PY),
    Rule("CERT_NONE", "cert_none", _rx(r"\bCERT_NONE\b"),
         'ssl.create_default_context(cafile="DIR/ca.crt") (CERT_REQUIRED, hostname checked) ' + BUNDLE,
         PY, "bare"),
    Rule("check_hostname = False", "check_hostname", _rx(r"\bcheck_hostname\s*=\s*False\b"),
         f"keep check_hostname on; {ISSUE}", PY, "bare"),
    *_env("PYTHONHTTPSVERIFY=0", "PYTHONHTTPSVERIFY", "0",
          "remove it; SSL_CERT_FILE=DIR/ca.crt (and REQUESTS_CA_BUNDLE for requests) " + BUNDLE),
    # ---- Go
    Rule("InsecureSkipVerify: true", "insecureskipverify", _rx(r"\bInsecureSkipVerify\s*[:=]\s*true\b"),
         "RootCAs: an x509.CertPool holding DIR/ca.crt (AppendCertsFromPEM) " + BUNDLE, GO, "bare"),
    # ---- Node
    Rule("rejectUnauthorized: false", "rejectunauthorized",
         _rx(r"""\brejectUnauthorized["']?\s*[:=]\s*false\b"""),
         'ca: fs.readFileSync("DIR/ca.crt") in the TLS options (or NODE_EXTRA_CA_CERTS=DIR/ca.crt) ' + BUNDLE,
         JS),
    *_env("NODE_TLS_REJECT_UNAUTHORIZED=0", "NODE_TLS_REJECT_UNAUTHORIZED", "0",
          "remove it; NODE_EXTRA_CA_CERTS=DIR/ca.crt " + BUNDLE),
    # ---- Java, Kotlin
    Rule("trust-all X509TrustManager", "servertrusted",
         _rx(r"\bcheckServerTrusted\s*\([^()]*\)\s*(?:throws\s+[\w.]+(?:\s*,\s*[\w.]+)*\s*)?"
             r"(?:\{\s*(?:return\s*;?\s*)?\}|=\s*Unit\b)"),
         "delete the trust manager; a TrustManagerFactory over a KeyStore holding DIR/ca.crt " + BUNDLE, JVM, "bare",
         raw_gate=False),
    Rule("trust-all strategy", "trust",
         _rx(r"\b(?:TrustAllStrategy|TrustSelfSignedStrategy|InsecureTrustManagerFactory)\b"
             r"|\bloadTrustMaterial\s*\([^\n]*\(\s*\w+\s*,\s*\w+\s*\)\s*->\s*true\b"),
         "SSLContexts.custom().loadTrustMaterial(a KeyStore holding DIR/ca.crt) " + BUNDLE, JVM, "bare", True),
    Rule("NoopHostnameVerifier", "noophostnameverifier", _rx(r"\bNoopHostnameVerifier\b"),
         f"drop it (the default verifier checks the name); {ISSUE}", JVM, "bare", True),
    Rule("ALLOW_ALL_HOSTNAME_VERIFIER", "allow", _rx(r"\b(?:ALLOW_ALL_HOSTNAME_VERIFIER|AllowAllHostnameVerifier)\b"),
         f"drop it (the default verifier checks the name); {ISSUE}", JVM, "bare", True),
    Rule("HostnameVerifier returning true", "hostnameverifier",
         _rx(r"[Hh]ostnameVerifier\b[^\n]*?(?:\(\s*\w+\s*,\s*\w+\s*\)\s*->\s*true\b|\{\s*\w+\s*,\s*\w+\s*->\s*true\s*\})"
             r"|\bboolean\s+verify\s*\(\s*String\s+\w+\s*,\s*SSLSession\s+\w+\s*\)\s*\{\s*return\s+true\s*;\s*\}"),
         f"drop it (the default verifier checks the name); {ISSUE}", JVM, "bare", raw_gate=False),
    # ---- Rust
    Rule("danger_accept_invalid_certs(true)", "danger_accept_invalid",
         _rx(r"\bdanger_accept_invalid_(?:certs|hostnames)\s*\(\s*true\s*\)"),
         '.add_root_certificate(Certificate::from_pem(&std::fs::read("DIR/ca.crt")?)?) ' + BUNDLE,
         frozenset({"rust"}), "bare"),
    # ---- .NET
    Rule("ServerCertificateCustomValidationCallback returning true", "validationcallback",
         _rx(r"\b(?:ServerCertificateCustomValidationCallback|ServerCertificateValidationCallback|"
             r"RemoteCertificateValidationCallback)\s*\+?=\s*(?:(?:\([^()]*\)|\w+)\s*=>\s*(?:true\b|\{\s*return\s+true\s*;\s*\})"
             r"|delegate\s*(?:\([^()]*\))?\s*\{\s*return\s+true\s*;\s*\}"
             r"|HttpClientHandler\.DangerousAcceptAnyServerCertificateValidator\b)"),
         "remove the callback; put the trustyard root in the machine's trust store, or an X509ChainPolicy with "
         "TrustMode = CustomRootTrust over DIR/ca.crt " + BUNDLE, frozenset({"csharp"}), "bare", raw_gate=False),
    # ---- Ruby
    Rule("VERIFY_NONE", "verify_none", _rx(r"\bVERIFY_NONE\b"),
         'verify_mode: OpenSSL::SSL::VERIFY_PEER, ca_file: "DIR/ca.crt" ' + BUNDLE, frozenset({"ruby"}), "bare"),
    Rule("ssl verify: false", "verify", _rx(r"\bssl\b[^\n]*?\bverify:\s*false\b|\bverify_mode:\s*:none\b"),
         'ssl: { ca_file: "DIR/ca.crt" } ' + BUNDLE, frozenset({"ruby"}), "bare"),
    # ---- PHP
    Rule("CURLOPT_SSL_VERIFYPEER false", "curlopt_ssl_verify",
         _rx(r"\bCURLOPT_SSL_VERIFY(?:PEER|HOST)\s*(?:,|=>)\s*(?:false|0)\b", re.I),
         'CURLOPT_SSL_VERIFYPEER => true, CURLOPT_CAINFO => "DIR/ca.crt" ' + BUNDLE, frozenset({"php"})),
    Rule("'verify' => false (Guzzle)", "verify", _rx(r"""['"]verify['"]\s*=>\s*false\b""", re.I),
         "'verify' => 'DIR/ca.crt' " + BUNDLE, frozenset({"php"})),
    # ---- command lines: shell, Dockerfiles, Makefiles, CI YAML, and strings of code
    Rule("curl -k/--insecure", "curl",
         _rx(r"""\bcurl\b[^|;&\n]*?[\s'"](?:--insecure\b|-[a-zA-Z]*k[a-zA-Z]*\b)"""),
         "curl --cacert DIR/ca.crt " + BUNDLE),
    Rule("wget --no-check-certificate", "check-certificate", _rx(r"--no-check-certificate\b"),
         "wget --ca-certificate=DIR/ca.crt " + BUNDLE),
    Rule("wgetrc check_certificate = off", "check_certificate", _rx(r"^\s*check_certificate\s*=\s*off\b", re.I | re.M),
         "ca_certificate = DIR/ca.crt " + BUNDLE),
    *_env("GIT_SSL_NO_VERIFY", "GIT_SSL_NO_VERIFY", "1|true|yes|on",
          "remove it; git config http.sslCAInfo DIR/ca.crt (or GIT_SSL_CAINFO) " + BUNDLE),
    Rule("git http.sslVerify=false", "sslverify",
         _rx(r"""\bhttp\.(?:\S+\.)?sslVerify["']?\s*(?:=|\s)\s*["']?(?:false|0|no|off)\b""", re.I),
         "git config http.sslCAInfo DIR/ca.crt " + BUNDLE),
    Rule("npm strict-ssl false", "strict-ssl", _rx(r"""\bstrict-ssl["']?\s*(?:=|:|\s)\s*["']?false\b""", re.I),
         "npm config set cafile DIR/ca.crt " + BUNDLE),
    Rule("pip --trusted-host", "trusted", _rx(r"--trusted-host\b|\bPIP_TRUSTED_HOST\b\s*[=:]|^\s*trusted[-_]host\s*=",
                                              re.M),
         "pip --cert DIR/ca.crt (or PIP_CERT) " + BUNDLE),
    Rule("--insecure-skip-tls-verify", "insecure-skip-tls-verify",
         _rx(r"--insecure-skip-tls-verify\b(?!\s*=\s*false)"),
         "--ca-file DIR/ca.crt (helm) or --certificate-authority DIR/ca.crt (kubectl) " + BUNDLE),
    # ---- configuration: kubeconfig, Prometheus, Traefik, Telegraf, Ansible, .gitconfig, .npmrc
    Rule("insecure-skip-tls-verify: true", "insecure-skip-tls-verify",
         _rx(r"""\binsecure-skip-tls-verify["']?\s*[:=]\s*["']?true\b""", re.I),
         "certificate-authority: DIR/ca.crt in the cluster entry " + BUNDLE, CONFIG),
    Rule("insecure_skip_verify: true", "skip",
         _rx(r"""\binsecure_?skip_?verify["']?\s*[:=]\s*["']?true\b""", re.I),
         "tls_config: ca_file: DIR/ca.crt " + BUNDLE, CONFIG),
    Rule("verification off in configuration", "verif",
         _rx(r"""\b(?:ssl_?verify|verify_?ssl|tls_?verify|verify_?tls|ssl_verify_peer)["']?"""
             r"""\s*[:=]\s*["']?(?:false|no|off|0)\b""", re.I),
         "turn it on and point the CA setting at DIR/ca.crt " + BUNDLE, CONFIG),
    Rule("validate_certs: false", "validate",
         _rx(r"""\bvalidate_?certs["']?\s*[:=]\s*["']?(?:false|no|off|0)\b""", re.I),
         "validate_certs: true, with the CA setting (e.g. ca_path) " + BUNDLE, CONFIG),
    # ---- nginx (proxy_pass https:// with verification left at its default, off: insecure.py)
    Rule("proxy_ssl_verify off", "proxy_ssl_verify", _rx(r"\bproxy_ssl_verify\s+off\b"),
         "proxy_ssl_verify on; proxy_ssl_trusted_certificate DIR/ca.crt; proxy_ssl_name NAME; " + BUNDLE,
         frozenset({"nginx"})),
)

NGINX_PASS_FIX = ("add proxy_ssl_verify on; proxy_ssl_trusted_certificate DIR/ca.crt; proxy_ssl_name NAME; "
                  "(nginx does not verify upstreams by default) " + BUNDLE)

# ---------------------------------------------------------------- languages

EXTENSIONS = {
    ".py": "python", ".pyw": "python", ".go": "go", ".js": "javascript", ".mjs": "javascript",
    ".cjs": "javascript", ".ts": "javascript", ".tsx": "javascript", ".jsx": "javascript",
    ".java": "java", ".kt": "kotlin", ".kts": "kotlin", ".rs": "rust", ".cs": "csharp", ".rb": "ruby",
    ".php": "php", ".sh": "shell", ".bash": "shell", ".zsh": "shell", ".ksh": "shell", ".env": "shell",
    ".dockerfile": "dockerfile", ".mk": "make", ".yaml": "yaml", ".yml": "yaml", ".json": "json",
    ".toml": "toml", ".ini": "ini", ".cfg": "ini", ".cnf": "ini", ".properties": "ini", ".conf": "ini",
    ".kubeconfig": "yaml",
}
NAMES = {
    "dockerfile": "dockerfile", "containerfile": "dockerfile", "makefile": "make", "gnumakefile": "make",
    ".npmrc": "ini", ".yarnrc": "ini", ".gitconfig": "ini", ".curlrc": "ini", ".wgetrc": "ini", "wgetrc": "ini",
    "pip.conf": "ini", "pip.ini": "ini", ".env": "shell", ".envrc": "shell", ".bashrc": "shell",
    ".profile": "shell", ".bash_profile": "shell", ".zshrc": "shell", "gemfile": "ruby", "rakefile": "ruby",
    "vagrantfile": "ruby", "kubeconfig": "yaml", "nginx.conf": "nginx",
}
SHEBANGS = (("python", "python"), ("node", "javascript"), ("ruby", "ruby"), ("php", "php"), ("bash", "shell"),
            ("/sh", "shell"), (" sh", "shell"), ("zsh", "shell"), ("ksh", "shell"))
_NGINX_DIRS = {"nginx", "sites-available", "sites-enabled", "conf.d", "http.d"}
NGINX_CONTENT = re.compile(rb"^[ \t]*(?:server|location|upstream|http)\b[^\n{;]*\{", re.M)
NGINX_PASS = re.compile(r"\bproxy_pass\s+https://")


def language_by_name(path: PurePath) -> str | None:
    """The language a file's name says, ``""`` when only its first line can tell (no extension), or
    None: not a file the finder reads."""
    name = path.name.lower()
    if name in NAMES:
        return NAMES[name]
    if name.startswith(("dockerfile.", "containerfile.")):
        return "dockerfile"
    if name == "config" and path.parent.name == ".kube":
        return "yaml"
    if name.startswith("kubeconfig"):
        return "yaml"
    suffix = path.suffix.lower()
    if suffix:
        lang = EXTENSIONS.get(suffix)
        if lang == "ini" and suffix == ".conf" and _NGINX_DIRS & {p.lower() for p in path.parent.parts[-2:]}:
            return "nginx"
        return lang
    if path.parent.name in ("sites-available", "sites-enabled"):
        return "nginx"
    return ""


def language_by_shebang(head: bytes) -> str | None:
    if not head.startswith(b"#!"):
        return None
    line = head.split(b"\n", 1)[0].decode("latin-1")
    return next((lang for word, lang in SHEBANGS if word in line), None)


# ---------------------------------------------------------------- comments and strings, per language

_DQ = r'"(?:\\.|[^"\\\n])*"'
_SQ = r"'(?:\\.|[^'\\\n])*'"
_HASH = r"(?<!\S)#[^\n]*"  # a comment starts a word in shell, YAML, TOML, nginx, Dockerfiles
_C = r"//[^\n]*|/\*[\s\S]*?\*/"
_PY_STR = r"""[rRbBuUfF]{0,2}(?:"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')"""

# (comment, string, docstring) alternatives per comment family; docstrings are blanked like comments
# when they stand alone as a statement (what a docstring or a long comment block is).
SYNTAX: dict[str, re.Pattern[str]] = {
    "python": re.compile(rf"""(?P<d>[rRbBuUfF]{{0,2}}(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''))"""
                         rf"""|(?P<s>{_PY_STR})|(?P<c>#[^\n]*)"""),
    "hash": re.compile(rf"(?P<s>{_DQ}|{_SQ})|(?P<c>{_HASH})"),
    "ruby": re.compile(rf"(?P<c>^=begin\b[\s\S]*?^=end\b|{_HASH})|(?P<s>{_DQ}|{_SQ})", re.M),
    "c": re.compile(rf"(?P<c>{_C})|(?P<s>{_DQ}|{_SQ}|`[^`]*`)"),
    "rust": re.compile(rf"(?P<c>{_C})|(?P<s>{_DQ}|'(?:\\.|[^'\\\n])')"),
    "php": re.compile(rf"(?P<c>{_C}|(?<![\w$])#(?!\[)[^\n]*)|(?P<s>{_DQ}|{_SQ})"),
    "ini": re.compile(rf"(?P<c>^[ \t]*[;#][^\n]*)|(?P<s>{_DQ})", re.M),
    "json": re.compile(rf"(?P<s>{_DQ})"),
}
FAMILY = {
    "python": "python", "shell": "hash", "dockerfile": "hash", "make": "hash", "yaml": "hash", "toml": "hash",
    "nginx": "hash", "ruby": "ruby", "go": "c", "javascript": "c", "java": "c", "kotlin": "c", "csharp": "c",
    "rust": "rust", "php": "php", "ini": "ini", "json": "json",
}

MARKER = re.compile(r"trustyard:\s*allow-insecure\b[ \t]*([^\n]*)")

__all__ = ["FAMILY", "MARKER", "NGINX_CONTENT", "NGINX_PASS", "NGINX_PASS_FIX", "RULES", "SYNTAX", "Rule",
           "language_by_name",
           "language_by_shebang"]
