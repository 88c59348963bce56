"""An upstream that accepts a request only with a valid Airlock `signed_request` token.

It verifies the token with PyJWT against the control service's JWKS (an independent
implementation: nothing of Airlock's), then recomputes the request binding from what it
received, as the README tells an upstream to:

    req_sha256 = base64url(SHA-256(METHOD "\n" PATH "\n" BODY)), no padding

Usage: signed_upstream.py PORT JWKS_URL ISSUER AUDIENCE

Every answer is JSON: 200 {"ok": true, "claims": ..., "token": ...} (the token is echoed
so the test can replay it elsewhere) or 401 {"ok": false, "error": ...}.
"""

import base64
import hashlib
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

PORT, JWKS_URL, ISSUER, AUDIENCE = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
# Keys are looked up by `kid`; an unknown `kid` makes PyJWKClient fetch the JWKS again,
# which is how a newly published key is found.
KEYS = jwt.PyJWKClient(JWKS_URL, cache_keys=True, lifespan=5)


def binding(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256(method.encode() + b"\n" + path.encode() + b"\n" + body).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def answer(self, status: int, doc: dict) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self) -> None:
        body = self.read_body()
        auth = self.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return self.answer(401, {"ok": False, "error": "no bearer token"})
        token = auth[len("Bearer "):]
        try:
            key = KEYS.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=["ES256", "EdDSA"],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "jti", "req_sha256"]},
            )
        except jwt.PyJWTError as e:
            return self.answer(401, {"ok": False, "error": f"{type(e).__name__}: {e}"})
        if claims["req_sha256"] != binding(self.command, self.path, body):
            return self.answer(401, {"ok": False, "error": "request binding mismatch"})
        self.answer(200, {"ok": True, "claims": claims, "token": token, "kid": jwt.get_unverified_header(token)["kid"]})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

    def log_message(self, *args) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
