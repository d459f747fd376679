"""The OpenAPI 3.1 description of the REST API, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from .. import __version__

_PROBLEM = {"description": "RFC 7807 problem", "content": {"application/problem+json": {
    "schema": {"$ref": "#/components/schemas/Problem"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _PROBLEM for code in codes}


def _json_body(ref: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


_ISSUED = {"201": {"description": "issued", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/Issued"}}}}}
_ADMIN: list[dict[str, list[str]]] = [{"admin": []}]
_SHED = {"503": {"description": "send the same request again after Retry-After: overloaded (the signing queue "
                                "is too deep; nothing was done), redemptionInProgress (the same token or renewal "
                                "is being signed, or was cut by a crash and is released within 10 s), "
                                "databaseUnavailable (the database is restarting)", "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                 "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "trustyard CA", "version": __version__,
             "description": "Internal CA: bootstrap-token issuance, renewal by the current certificate, revocation."},
    "paths": {
        "/v1/roots": {"get": {
            "summary": "The trust bundle: PEM, PKCS#12 or JKS truststore (password changeit), ConfigMap",
            "parameters": [
                {"name": "format", "in": "query", "schema": {"enum": ["pem", "p12", "jks", "configmap"]}},
                {"name": "name", "in": "query", "schema": {"type": "string"}, "description": "ConfigMap name"},
                {"name": "namespace", "in": "query", "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "the bundle", "headers": {
                    "ETag": {"schema": {"type": "string"}},
                    "Trustyard-Bundle-Version": {"schema": {"type": "integer"}},
                    "Trustyard-Bundle-Sha256": {"schema": {"type": "string"}}},
                    "content": {"application/pem-certificate-chain": {"schema": {"type": "string"}},
                                "application/x-pkcs12": {}, "application/x-java-keystore": {},
                                "application/yaml": {"schema": {"type": "string"}}}},
                "304": {"description": "not modified"}, **_errors(400)}}},
        "/v1/sign": {"post": {"summary": "Sign a CSR with a one-time bootstrap token",
                              "requestBody": _json_body("SignRequest"),
                              "responses": {**_ISSUED, **_errors(400, 401, 403), **_SHED}}},
        "/v1/renew": {"post": {"summary": "Renew, authenticated by a proof signed with the current certificate's key",
                               "description": "A certificate renews once (then 409 superseded); a retry with "
                                              "the same CSR key within 5 minutes returns the same certificate.",
                               "requestBody": _json_body("RenewRequest"),
                               "responses": {**_ISSUED, **_errors(400, 401, 403, 409), **_SHED}}},
        "/v1/revoke": {"post": {"summary": "Revoke (administrator bearer token, or proof by the key holder)",
                                "requestBody": _json_body("RevokeRequest"),
                                "responses": {"200": {"description": "revoked", "content": {"application/json": {
                                    "schema": {"$ref": "#/components/schemas/Certificate"}}}},
                                    **_errors(400, 401, 403, 404, 409)}}},
        "/v1/certificates": {"get": {"summary": "List certificates", "security": _ADMIN, "parameters": [
            {"name": "status", "in": "query", "schema": {"type": "string",
                                                         "enum": ["pending", "issued", "failed", "revoked"]}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}}],
            "responses": {"200": {"description": "certificates"}, **_errors(400, 401, 403)}}},
        "/v1/certificates/{serial}": {"get": {
            "summary": "One certificate; without a token only its status (revoked, superseded)",
            "security": [*_ADMIN, {}], "parameters": [
            {"name": "serial", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "certificate"}, **_errors(401, 403, 404)}}},
        "/v1/checkin": {"post": {
            "summary": "A relying party checks in, authenticated by a proof signed with its certificate's key",
            "description": "Proof: aud trustyard:checkin, at most 2 minutes, a report claim (instance, kind, "
                           "bundle_version, bundle_sha256, endpoint_serial, failures, last_error, agent_version, "
                           "interval_seconds). The answer's directives (refresh-bundle, renew-now, retry-after "
                           "with seconds) are to be obeyed at once. A refused check-in changes nothing.",
            "requestBody": _json_body("CheckinRequest"),
            "responses": {"200": {"description": "accepted, or shed with a retry-after directive"},
                          **_errors(400, 401, 403)}}},
        "/v1/fleet": {"get": {"summary": "The relying parties that check in, with their state (fresh, stale)",
                              "security": _ADMIN, "parameters": [
                                  {"name": "stale", "in": "query", "schema": {"type": "string", "enum": ["1"]}}],
                              "responses": {"200": {"description": "parties"}, **_errors(401, 403)}}},
        "/crl/{issuer}/{shard}.crl": {"get": {
            "summary": "A shard's CRL (DER), the URL in its certificates' CRL Distribution Points",
            "parameters": [{"name": "issuer", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"}},
                           {"name": "shard", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "responses": {"200": {"description": "the CRL, with ETag, Last-Modified and Cache-Control"},
                          "304": {"description": "not modified (If-None-Match)"}, **_errors(404)}}},
        "/healthz": {"get": {"summary": "Health", "responses": {"200": {"description": "healthy"},
                                                                 "503": {"description": "unhealthy"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format"}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
    },
    "components": {
        "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Problem": {"type": "object", "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"}, "rule": {"type": "string"}, "value": {}}},
            "SignRequest": {"type": "object", "additionalProperties": False, "required": ["csr", "token"],
                            "properties": {"csr": {"type": "string", "description": "PEM CSR"},
                                           "token": {"type": "string"},
                                           "ttl": {"type": "string", "examples": ["24h"]}}},
            "RenewRequest": {"type": "object", "additionalProperties": False, "required": ["csr", "proof"],
                             "properties": {"csr": {"type": "string"}, "proof": {
                                 "type": "string", "description": "JWS signed by the current key, x5c header, "
                                 "aud trustyard:renew, csr_sha256 claim"}}},
            "CheckinRequest": {"type": "object", "additionalProperties": False, "required": ["proof"],
                               "properties": {"proof": {"type": "string"}}},
            "RevokeRequest": {"type": "object", "additionalProperties": False, "required": ["serial"],
                              "properties": {"serial": {"type": "string"}, "reason": {"type": "string"},
                                             "proof": {"type": "string"}}},
            "Issued": {"type": "object", "properties": {
                "serial": {"type": "string"}, "not_before": {"type": "string"}, "not_after": {"type": "string"},
                "certificate": {"type": "string"}, "chain": {"type": "string"}, "roots": {"type": "string"},
                "bundle_version": {"type": "integer"}, "bundle_sha256": {"type": "string"}}},
            "Certificate": {"type": "object", "properties": {
                "serial": {"type": "string"}, "status": {"type": "string"}, "sans": {"type": "array"}}},
        },
    },
}
