"""The benchmark policy, written once and rendered twice: as Airlock's plugin config and
as the native Envoy anchor (jwt_authn + rbac + lua + header_mutation).

Keeping both renderings generated from one table is what makes the comparison fair: a
rule added to one side cannot be forgotten on the other.

The policy has 50 rules of mixed kinds, in the order Airlock evaluates them:
  * 10 deny rules on the path (prefix, exact, regex),
  * 10 deny rules on a request header (exact, contains, prefix, suffix, regex, any_of),
  * 10 deny rules on a JSON body field (POST only, so an allowed GET never needs the body),
  * 20 allow rules on groups + method + path; the three that the load actually hits come
    last, so every allowed request is checked against all rules before it.
Anything else is denied (default deny). After the 50, two allows for the streaming
scenarios (`scripts/bench/stream.py`), which no other scenario reaches: the LLM stream and
the NDJSON stream, unmasked when the request carries the bench's opt-out header, masked
otherwise (the native anchor has no masking and does not take part in those scenarios).

Native anchor, and where it differs:
  * Airlock's first-match order "all denies, then allows, default deny" is expressed with
    two RBAC filters: one with action DENY (path + header rules), one with action ALLOW
    (group + method + path rules; no match means 403).
  * RBAC cannot look into bodies, so the 10 body rules are a Lua filter that only runs
    for POST (match_delegate skips it otherwise). Lua has no JSON parser and no regex:
    it finds `"field": "value"` with a Lua pattern and tests lower-cased Lua patterns.
    That is cheaper and weaker than Airlock's (no JSON Pointer, no unicode-escape or
    SQL-comment normalisation), which favours the anchor.
  * Credential injection is a header_mutation filter; jwt_authn `forward: false` removes
    the agent's token, `claim_to_headers` sets the identity headers. jwt_authn's
    verified-token cache is on (`jwt_cache_config`), as Airlock's is.
  * Masking has no native equivalent and is not part of the anchor.
"""

import json

ISSUER = "https://idp.airlock.test"  # airlock-demo idp's default issuer
AUDIENCE = "airlock-demo"
UPSTREAM_TOKEN_ENV = "AIRLOCK_DEMO_UPSTREAM_TOKEN"
BENCH_GROUP = "support"

# (kind, value): prefix / exact / regex (regexes are anchored, so RE2 full-match and
# Airlock's unanchored search agree).
DENY_PATHS = [
    ("prefix", "/admin"),
    ("prefix", "/internal"),
    ("prefix", "/debug"),
    ("prefix", "/.git"),
    ("exact", "/metrics"),
    ("exact", "/env"),
    ("exact", "/actuator/heapdump"),
    ("regex", r"^/v[0-9]+/secrets(/.*)?$"),
    ("regex", r"^/backup/.*\.(sql|tar|gz)$"),
    ("regex", r"^/users/[0-9]+/password$"),
]

# (header, kind, value)
DENY_HEADERS = [
    ("x-debug-bypass", "exact", "1"),
    ("user-agent", "regex", r"(?i)(sqlmap|nikto|nmap)"),
    ("x-forwarded-host", "contains", "internal."),
    ("x-tenant", "any_of", ["root", "system"]),
    ("x-env", "exact", "prod-admin"),
    ("x-requested-with", "exact", "sqlmap"),
    ("origin", "suffix", ".evil.example"),
    ("referer", "contains", "phish"),
    ("x-role", "exact", "superuser"),
    ("x-impersonate", "prefix", "admin"),
]

# (json pointer, Airlock matcher fields, Lua key, Lua test)
# Lua test: ("patterns", [...]) any lower-cased Lua pattern found; ("exact", [...]) equals
# one of; ("prefix", s) starts with.
_SQL_DESTRUCTIVE = [
    f"%f[%w]{verb}%s+{obj}%f[%W]"
    for verb in ("drop", "truncate", "alter")
    for obj in ("table", "database", "schema")
]
DENY_BODY = [
    ("/sql", {"regex": r"\b(drop|truncate|alter)\s+(table|database|schema)\b", "normalize": "sql"},
     "sql", ("patterns", _SQL_DESTRUCTIVE)),
    ("/sql", {"regex": r"\bdelete\s+from\s+\w+\s*(;|$)", "normalize": "sql"},
     "sql", ("patterns", ["%f[%w]delete%s+from%s+[%w_]+%s*;", "%f[%w]delete%s+from%s+[%w_]+%s*$"])),
    ("/sql", {"regex": r"\bgrant\s+all\b", "normalize": "sql"},
     "sql", ("patterns", ["%f[%w]grant%s+all%f[%W]"])),
    ("/sql", {"contains": "pg_sleep", "case_insensitive": True},
     "sql", ("patterns", ["pg_sleep"])),
    ("/query", {"contains": "$where"},
     "query", ("patterns", ["%$where"])),
    ("/params/name", {"exact": "exec_shell"},
     "name", ("exact", ["exec_shell"])),
    ("/params/arguments/command", {"regex": r"rm\s+-rf"},
     "command", ("patterns", ["rm%s+%-rf"])),
    ("/action", {"any_of": ["delete_namespace", "drop_database"]},
     "action", ("exact", ["delete_namespace", "drop_database"])),
    ("/url", {"prefix": "file://"},
     "url", ("prefix", "file://")),
    ("/script", {"contains": "os.system"},
     "script", ("patterns", ["os%.system"])),
]

# Allow rules nobody in the load matches (other teams, other paths): (group, method, kind, path).
DECOY_ALLOWS = [
    (f"team-{i:02}" if i % 2 else BENCH_GROUP, "GET" if i % 3 else "POST",
     ("prefix", "exact", "regex")[i % 3],
     {"prefix": f"/svc{i:02}/", "exact": f"/reports/{i:02}", "regex": f"^/teams/{i:02}/[a-z]+$"}[("prefix", "exact", "regex")[i % 3]])
    for i in range(1, 18)
]

# The three rules the load hits, last.
MASKED_PATH = "/large"
POST_PATH = "/echo"
GET_PATH = "/health"
# The streaming scenarios: the demo upstream's OpenAI-compatible SSE endpoint and NDJSON.
SSE_PATH = "/v1/chat/completions"
NDJSON_PATH = "/ndjson"
STREAM_PATHS_REGEX = r"^/(v1/chat/completions|ndjson)$"
UNMASKED_HEADER = ("x-bench-unmasked", "1")


def _stream_rules():
    when = {"groups": {"any_of": [BENCH_GROUP]}, "methods": ["GET", "POST"], "path": {"regex": STREAM_PATHS_REGEX}}
    unmasked = dict(when, headers=[{"name": UNMASKED_HEADER[0], "exact": UNMASKED_HEADER[1]}])
    return [{"name": "allow-stream-unmasked", "action": "allow", "when": unmasked},
            {"name": "allow-stream-masked", "action": "allow", "mask": "pii", "when": when}]


def _airlock_rules():
    rules = []
    for i, (kind, value) in enumerate(DENY_PATHS, 1):
        rules.append({"name": f"deny-path-{i:02}", "action": "deny", "when": {"path": {kind: value}}})
    for i, (name, kind, value) in enumerate(DENY_HEADERS, 1):
        rules.append({"name": f"deny-header-{i:02}", "action": "deny",
                      "when": {"headers": [{"name": name, kind: value}]}})
    for i, (pointer, fields, _, _) in enumerate(DENY_BODY, 1):
        rules.append({"name": f"deny-body-{i:02}", "action": "deny",
                      "when": {"methods": ["POST"], "body": [{"json_pointer": pointer, **fields}]}})
    for i, (group, method, kind, path) in enumerate(DECOY_ALLOWS, 1):
        rules.append({"name": f"allow-decoy-{i:02}", "action": "allow",
                      "when": {"groups": {"any_of": [group]}, "methods": [method], "path": {kind: path}}})
    rules.append({"name": "allow-masked-export", "action": "allow", "mask": "pii",
                  "when": {"groups": {"any_of": [BENCH_GROUP]}, "methods": ["GET"], "path": {"prefix": MASKED_PATH}}})
    rules.append({"name": "allow-tool-post", "action": "allow",
                  "when": {"groups": {"any_of": [BENCH_GROUP]}, "methods": ["POST"], "path": {"prefix": POST_PATH}}})
    rules.append({"name": "allow-health", "action": "allow",
                  "when": {"groups": {"any_of": [BENCH_GROUP]}, "methods": ["GET"], "path": {"exact": GET_PATH}}})
    assert len(rules) == 50, len(rules)
    return rules


def airlock_config(jwks, control=None, audit=None):
    """The Airlock plugin config (a dict). `control` / `audit` are the sections for the
    control service; passed only when the filter supports them (see run.py)."""
    config = {
        "auth": {
            "issuers": [ISSUER],
            "audiences": [AUDIENCE],
            "clock_skew_seconds": 30,
            "groups_claim": "groups",
            "jwks": {"inline": jwks},
        },
        "request_body_limit_bytes": 1048576,
        "response_body_limit_bytes": 4194304,
        "mask_profiles": {"pii": {"detectors": ["all"], "fields": ["password", "api_token"]}},
        "upstreams": [{
            "cluster": "outbound|8080||customer-db.agents.svc.cluster.local",
            "credential": {"type": "bearer", "token": {"env": UPSTREAM_TOKEN_ENV}},
        }],
        "rules": _airlock_rules() + _stream_rules(),
        "default_action": "deny",
    }
    if control is not None:
        config["control"] = control
    if audit is not None:
        config["audit"] = audit
    return config


# ---------------------------------------------------------------------------------------
# Native anchor. Emitted as JSON-in-YAML (JSON is valid YAML), so no YAML library is needed.

def _string_match(kind, value):
    if kind == "regex":
        # RE2 safe_regex is a full match; Airlock's regex is a search.
        if value.startswith("^") and value.endswith("$"):
            return {"safe_regex": {"regex": value}}
        flags = ""
        if value.startswith("(?i)"):
            flags, value = "(?i)", value[4:]
        return {"safe_regex": {"regex": f"{flags}.*(?:{value}).*"}}
    return {kind: value}


def _header_permission(name, kind, value):
    if kind == "any_of":
        return {"or_rules": {"rules": [{"header": {"name": name, "string_match": {"exact": v}}} for v in value]}}
    return {"header": {"name": name, "string_match": _string_match(kind, value)}}


def _path_permission(kind, value):
    return {"url_path": {"path": _string_match(kind, value)}}


def _group_principal(group):
    return {"metadata": {
        "filter": "envoy.filters.http.jwt_authn",
        "path": [{"key": "jwt_payload"}, {"key": "groups"}],
        "value": {"list_match": {"one_of": {"string_match": {"exact": group}}}},
    }}


def _allow_policy(group, method, kind, path):
    return {
        "permissions": [{"and_rules": {"rules": [
            {"header": {"name": ":method", "string_match": {"exact": method}}},
            _path_permission(kind, path),
        ]}}],
        "principals": [_group_principal(group)],
    }


def _lua_source():
    checks = []
    for i, (_, _, key, (kind, arg)) in enumerate(DENY_BODY, 1):
        checks.append({"rule": f"deny-body-{i:02}", "key": key, "kind": kind, "arg": arg})

    def lua_str(s):
        return json.dumps(s)  # a JSON string literal is a valid Lua string literal here

    def lua_val(v):
        if isinstance(v, list):
            return "{" + ", ".join(lua_str(x) for x in v) + "}"
        return lua_str(v)

    rows = ",\n".join(
        f'  {{rule = {lua_str(c["rule"])}, key = {lua_str(c["key"])}, kind = {lua_str(c["kind"])}, arg = {lua_val(c["arg"])}}}'
        for c in checks
    )
    return f"""-- Body rules of the benchmark policy (generated by scripts/bench/policy.py).
local checks = {{
{rows}
}}

local function field(body, key)
  return body:match('"' .. key .. '"%s*:%s*"(.-)"')
end

local function holds(kind, arg, value)
  if kind == "patterns" then
    for _, p in ipairs(arg) do
      if value:find(p) then return true end
    end
  elseif kind == "exact" then
    for _, s in ipairs(arg) do
      if value == s then return true end
    end
  elseif kind == "prefix" then
    return value:sub(1, #arg) == arg
  end
  return false
end

function envoy_on_request(handle)
  local body = handle:body()
  if body == nil then return end
  local text = body:getBytes(0, body:length())
  for _, c in ipairs(checks) do
    local value = field(text, c.key)
    if value ~= nil and holds(c.kind, c.arg, value:lower()) then
      handle:respond({{[":status"] = "403", ["content-type"] = "application/json"}},
        '{{"error":"denied","rule":"' .. c.rule .. '"}}')
      return
    end
  end
end
"""


def native_filters(jwks_json, upstream_token):
    """The native anchor's HTTP filters (list of filter dicts, router excluded).
    `upstream_token` is written into the bootstrap: header_mutation has no env lookup."""
    deny_policies = {}
    for i, (kind, value) in enumerate(DENY_PATHS, 1):
        deny_policies[f"deny-path-{i:02}"] = {"permissions": [_path_permission(kind, value)], "principals": [{"any": True}]}
    for i, (name, kind, value) in enumerate(DENY_HEADERS, 1):
        deny_policies[f"deny-header-{i:02}"] = {"permissions": [_header_permission(name, kind, value)], "principals": [{"any": True}]}
    allow_policies = {}
    for i, rule in enumerate(DECOY_ALLOWS, 1):
        allow_policies[f"allow-decoy-{i:02}"] = _allow_policy(*rule)
    allow_policies["allow-masked-export"] = _allow_policy(BENCH_GROUP, "GET", "prefix", MASKED_PATH)
    allow_policies["allow-tool-post"] = _allow_policy(BENCH_GROUP, "POST", "prefix", POST_PATH)
    allow_policies["allow-health"] = _allow_policy(BENCH_GROUP, "GET", "exact", GET_PATH)
    assert len(deny_policies) + len(DENY_BODY) + len(allow_policies) == 50

    method_is_post = {"single_predicate": {
        "input": {"name": "method", "typed_config": {
            "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
            "header_name": ":method"}},
        "value_match": {"exact": "POST"},
    }}
    return [
        {"name": "envoy.filters.http.jwt_authn", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"idp": {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "local_jwks": {"inline_string": jwks_json},
                "forward": False,
                "payload_in_metadata": "jwt_payload",
                "clock_skew_seconds": 30,
                "jwt_cache_config": {"jwt_cache_size": 10000},
                "claim_to_headers": [
                    {"header_name": "x-airlock-subject", "claim_name": "sub"},
                    {"header_name": "x-airlock-groups", "claim_name": "groups"},
                ],
            }},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}],
        }},
        {"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "DENY", "policies": deny_policies},
        }},
        {"name": "envoy.filters.http.match_delegate", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            "extension_config": {"name": "envoy.filters.http.lua", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": _lua_source()},
            }},
            "xds_matcher": {"matcher_list": {"matchers": [{
                "predicate": {"not_matcher": method_is_post},
                "on_match": {"action": {"name": "skip", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"}}},
            }]}},
        }},
        {"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": allow_policies},
        }},
        {"name": "envoy.filters.http.header_mutation", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"append": {
                "header": {"key": "authorization", "value": "Bearer " + upstream_token},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }}]},
        }},
    ]


def trivial_filters(wasm_path):
    """The Wasm floor: one Rust proxy-wasm filter that reads one header."""
    return [{"name": "trivial", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {
            "name": "trivial",
            "root_id": "trivial",
            "failure_policy": "FAIL_CLOSED",
            "vm_config": {"vm_id": "trivial", "runtime": "envoy.wasm.runtime.v8",
                          "code": {"local": {"filename": wasm_path}}},
        },
    }}]


if __name__ == "__main__":
    import sys

    # `python3 scripts/bench/policy.py airlock [--audit]`: the benchmark's Airlock plugin
    # config on stdout (with an empty JWKS to fill in; --audit adds the control section),
    # for bench/flow-profile and for reading.
    if len(sys.argv) < 2 or sys.argv[1] != "airlock":
        sys.exit("usage: policy.py airlock [--audit]")
    control = None
    if "--audit" in sys.argv:
        control = {"cluster": "outbound|8080||control.airlock.svc.cluster.local",
                   "authority": "control.airlock.svc.cluster.local",
                   "filter_key": {"env": "AIRLOCK_FILTER_KEY"}}
    print(json.dumps(airlock_config({"keys": []}, control=control,
                                    audit={"batch_size": 1000, "flush_interval_ms": 100} if control else None),
                     indent=2))
