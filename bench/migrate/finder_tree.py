"""A generated source tree for the verification-off finder's benchmark: filler code in the
finder's languages (and some prose it does not read), with the corpus's snippets
(tests/inventory/insecure_corpus) planted at the top of known files, each followed by filler
valid in its language, so other tools' parsers see well-formed files. Deterministic for a seed;
``manifest.json`` lists every planted construct (file, line, construct) and every planted
look-alike."""

from __future__ import annotations

import json
import random
import tomllib
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "tests" / "inventory" / "insecure_corpus"
WORDS = ("order", "invoice", "customer", "ledger", "account", "payment", "shipment", "stock", "price", "report",
         "queue", "token", "session", "tenant", "region", "cluster", "metric", "audit", "entry", "batch", "cache",
         "route", "policy", "quota", "profile")


def _w(r: random.Random) -> str:
    return r.choice(WORDS)


def _name(r: random.Random) -> str:
    return f"{_w(r)}_{_w(r)}_{r.randrange(1000)}"


def _camel(r: random.Random) -> str:
    return _w(r).capitalize() + _w(r).capitalize() + str(r.randrange(1000))


# One block of filler per language: valid at the top level of a file of that language. About one
# block in eight holds a word a trigger looks for (verify, ssl, curl, proxy_pass ...), set the safe way.
def _python(r: random.Random) -> str:
    n, a = _name(r), _w(r)
    tail = ", verify=self.ca_bundle" if r.random() < .12 else ""
    safe = f'        resp = self.http.get(self.base + "/{a}", timeout=10{tail})\n'
    return (f"\n\nclass {_camel(r)}:\n    def {n}(self, {a}_id: int, limit: int = 50) -> list[dict]:\n"
            f'        """Return the {a}s of {a}_id, at most limit of them."""\n'
            f"        rows = [r for r in self.store.fetch({a}_id) if r.get(\"enabled\")]\n"
            f"        rows.sort(key=lambda row: (row[\"{_w(r)}\"], row[\"id\"]))\n"
            f"        return rows[:limit]\n\n    def refresh(self):\n{safe}"
            f"        resp.raise_for_status()\n        self.cache[\"{_w(r)}\"] = resp.json()  # refreshed hourly\n")


def _go(r: random.Random) -> str:
    tls = "\ttlsConf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}\n\t_ = tlsConf\n" \
        if r.random() < .12 else ""
    return (f"\n// {_camel(r)} loads the {_w(r)} records for one {_w(r)}.\nfunc {_camel(r)}(ctx context.Context, "
            f"id int64) ([]string, error) {{\n{tls}\tout := make([]string, 0, 16)\n\tfor i := 0; i < 16; i++ {{\n"
            f"\t\tout = append(out, fmt.Sprintf(\"{_w(r)}-%d-%d\", id, i))\n\t}}\n\tif len(out) == 0 {{\n"
            f"\t\treturn nil, errors.New(\"no {_w(r)}\")\n\t}}\n\treturn out, nil\n}}\n")


def _js(r: random.Random) -> str:
    agent = "  const agent = new https.Agent({ ca: fs.readFileSync(caPath), rejectUnauthorized: true });\n" \
        if r.random() < .12 else "  const agent = undefined;\n"
    return (f"\nasync function {_camel(r)}(client, id) {{\n  // fetch the {_w(r)} of one {_w(r)}\n{agent}"
            f"  const res = await client.get(`/api/{_w(r)}/${{id}}`, {{ agent }});\n"
            f"  if (res.status !== 200) throw new Error('{_w(r)} lookup failed');\n"
            f"  return res.data.items.filter((x) => x.enabled).map((x) => x.{_w(r)});\n}}\n")


def _java(r: random.Random) -> str:
    return (f"\nclass {_camel(r)} {{\n    private final java.util.Map<String, Integer> {_w(r)}s = "
            f"new java.util.HashMap<>();\n\n    int count(String key) {{\n        // how many {_w(r)}s\n"
            f"        return {_w(r)}s.getOrDefault(key, 0);\n    }}\n\n    void add(String key) {{\n"
            f"        {_w(r)}s.merge(key, 1, Integer::sum);\n    }}\n}}\n")


def _kotlin(r: random.Random) -> str:
    return (f"\nfun {_w(r)}{_camel(r)}(items: List<String>): Map<String, Int> {{\n    // group the {_w(r)}s\n"
            f"    return items.groupingBy {{ it.take(3) }}.eachCount()\n}}\n")


def _rust(r: random.Random) -> str:
    return (f"\n/// Sum of the {_w(r)} values.\npub fn {_name(r)}(values: &[u64]) -> u64 {{\n"
            f"    values.iter().filter(|v| **v > {r.randrange(100)}).sum()\n}}\n")


def _csharp(r: random.Random) -> str:
    return (f"\nclass {_camel(r)}\n{{\n    // the {_w(r)} store\n"
            f"    private readonly Dictionary<string, int> items = new();\n"
            f"    public int Count(string key) => items.TryGetValue(key, out var n) ? n : 0;\n}}\n")


def _ruby(r: random.Random) -> str:
    return (f"\ndef {_name(r)}(records)\n  # keep the enabled {_w(r)}s\n  records.select {{ |x| x[:enabled] }}"
            f".map {{ |x| x[:{_w(r)}] }}\nend\n")


def _php(r: random.Random) -> str:
    return (f"\nfunction {_name(r)}(array $rows): array {{\n    // the {_w(r)} rows\n"
            f"    return array_filter($rows, fn($x) => $x['{_w(r)}'] > 0);\n}}\n")


def _shell(r: random.Random) -> str:
    fetch = f'  curl --cacert "$CA" -fsS "$BASE/{_w(r)}" -o "$OUT/{_w(r)}.json"\n' if r.random() < .15 else \
        f'  cp "$SRC/{_w(r)}.json" "$OUT/"\n'
    return f"\n{_name(r)}() {{\n  # sync the {_w(r)} files\n  mkdir -p \"$OUT\"\n{fetch}  echo done\n}}\n"


def _dockerfile(r: random.Random) -> str:
    return f"RUN mkdir -p /srv/{_w(r)} && echo {_w(r)} > /srv/{_w(r)}/name\nENV {_w(r).upper()}_MODE=prod\n"


def _yaml(r: random.Random) -> str:
    return (f"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {_w(r)}-{r.randrange(1000)}\ndata:\n"
            f"  {_w(r)}: \"{_w(r)}\"\n  url: http://{_w(r)}.internal:8080/\n  replicas: \"{r.randrange(9)}\"\n")


def _toml(r: random.Random) -> str:
    return f"\n[{_name(r)}]\nname = \"{_w(r)}\"\nlimit = {r.randrange(100)}\nenabled = true\n"


def _nginx(r: random.Random) -> str:
    return (f"\nserver {{\n    listen 80;\n    server_name {_w(r)}.internal;\n    location /{_w(r)}/ {{\n"
            f"        proxy_pass http://127.0.0.1:{8000 + r.randrange(1000)};\n    }}\n}}\n")


def _prose(r: random.Random) -> str:
    return " ".join(_w(r) for _ in range(60)) + ".\n\n"


FILLER = {"python": _python, "go": _go, "javascript": _js, "java": _java, "kotlin": _kotlin, "rust": _rust,
          "csharp": _csharp, "ruby": _ruby, "php": _php, "shell": _shell, "make": _shell, "dockerfile": _dockerfile,
          "yaml": _yaml, "toml": _toml, "ini": _toml, "nginx": _nginx, "prose": _prose}
# filler-only files: (extension, language, share)
MIX = ((".py", "python", 24), (".go", "go", 10), (".ts", "javascript", 8), (".js", "javascript", 6),
       (".java", "java", 10), (".kt", "kotlin", 2), (".rs", "rust", 3), (".cs", "csharp", 5), (".rb", "ruby", 3),
       (".php", "php", 3), (".sh", "shell", 5), (".yaml", "yaml", 8), (".toml", "toml", 2), (".conf", "nginx", 1),
       (".md", "prose", 6), (".txt", "prose", 4))


def _body(r: random.Random, lang: str, size: int) -> str:
    make, parts, n = FILLER[lang], [], 0
    while n < size:
        block = make(r)
        parts.append(block)
        n += len(block)
    return "".join(parts)


def build(root: Path, files: int, total_mb: int, copies: int, seed: int = 7) -> dict[str, object]:
    """Write the tree; return its manifest (also written to root/manifest.json)."""
    from trustyard.inventory.insecure_rules import language_by_name, language_by_shebang

    r = random.Random(seed)
    expected = tomllib.loads((CORPUS / "expected.toml").read_text())
    snippets = [(p, "pos") for p in sorted((CORPUS / "pos").rglob("*")) if p.is_file()]
    snippets += [(p, "neg") for p in sorted((CORPUS / "neg").rglob("*")) if p.is_file()]
    planted: list[dict[str, object]] = []
    lookalikes = 0
    avg = total_mb * 1024 * 1024 // files + 1
    made = total = 0
    tree = root / "tree"
    for copy in range(copies):
        for snippet, kind in snippets:
            rel = snippet.relative_to(CORPUS / kind)
            dest = tree / f"svc{made % 500:03d}" / f"{kind}{copy:02d}-{made}" / rel.relative_to(rel.parts[0])
            text = snippet.read_text()
            lang = language_by_name(dest) or language_by_shebang(text.encode()[:200]) or "shell"
            lang = "nginx" if rel.parts[0] == "nginx" else lang
            if lang != "json" and rel.name not in ("README.md",):
                filler = _body(r, lang if lang in FILLER else "toml", r.randrange(avg // 2, avg * 3 // 2))
                text = text.rstrip("\n") + "\n" + filler
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
            made, total = made + 1, total + len(text)
            if kind == "pos":
                for line, construct in expected[rel.as_posix()]:
                    planted.append({"file": str(dest.relative_to(tree)), "line": line, "construct": construct})
            else:
                lookalikes += 1
    weights = [w for _, _, w in MIX]
    while made < files or total < total_mb * 1024 * 1024:
        ext, lang, _ = r.choices(MIX, weights)[0]
        dest = tree / f"svc{made % 500:03d}" / f"m{made // 5000}" / f"{_name(r)}_{made}{ext}"
        text = _body(r, lang, r.randrange(avg // 5, avg * 9 // 5))
        if lang == "go":
            text = "package main\n" + text
        elif lang == "php":
            text = "<?php\n" + text
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        made, total = made + 1, total + len(text)
    manifest = {"files": made, "bytes": total, "planted": planted, "lookalike_files": lookalikes, "seed": seed}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return manifest


__all__ = ["build"]
