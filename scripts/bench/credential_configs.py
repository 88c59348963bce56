"""Writes the benchmark's policy with a `signed_request` upstream credential instead of
the static bearer, once per algorithm, for the native flow profile (BENCHMARKS.md):

    python3 scripts/bench/credential_configs.py target/flow-profile/bench-policy.json

writes bench-policy-signed-es256.json and bench-policy-signed-eddsa.json next to it, each
with a fresh key from `openssl genpkey` written inline (a benchmark key, thrown away), and
bench-policy-oauth.json with an `oauth2_client_credentials` upstream and
bench-policy-exchange.json with a `token_exchange` one (the profile answers the one
token fetch or exchange itself, so requests use the cached token).
"""

import json
import pathlib
import subprocess
import sys

policy = pathlib.Path(sys.argv[1])
config = json.loads(policy.read_text())
cluster = config["upstreams"][0]["cluster"]
for name, alg, genpkey in [
    ("es256", "ES256", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
    ("eddsa", "EdDSA", ["-algorithm", "ED25519"]),
]:
    pem = subprocess.run(["openssl", "genpkey", *genpkey], check=True, capture_output=True, text=True).stdout
    config["upstreams"] = [{"cluster": cluster, "credential": {
        "type": "signed_request", "key": {"value": pem}, "key_id": "bench", "alg": alg,
        "issuer": "https://airlock.bench", "audience": "customer-db", "lifetime_s": 30}}]
    out = policy.with_name(f"{policy.stem}-signed-{name}.json")
    out.write_text(json.dumps(config))
    print(out)
config["upstreams"] = [{"cluster": cluster, "credential": {
    "type": "oauth2_client_credentials",
    "token_endpoint": {"cluster": "idp", "authority": "idp", "path": "/oauth/token"},
    "client_id": "bench", "client_secret": {"value": "bench-client-secret"}}}]
out = policy.with_name(f"{policy.stem}-oauth.json")
out.write_text(json.dumps(config))
print(out)
config["upstreams"] = [{"cluster": cluster, "credential": {
    "type": "token_exchange",
    "token_endpoint": {"cluster": "idp", "authority": "idp", "path": "/oauth/token"},
    "client_id": "bench", "client_secret": {"value": "bench-client-secret"}, "audience": "customer-db"}}]
out = policy.with_name(f"{policy.stem}-exchange.json")
out.write_text(json.dumps(config))
print(out)
