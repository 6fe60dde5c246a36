"""A small OpenID Connect provider for the tests, on loopback: a discovery document, a JWKS,
a token endpoint (client credentials and password grants) and, for the tests only, `/mint`
(any claims, signed with the current key or a stranger's) and `/rotate` (a new signing key).

Usage: oidc_provider.py ACCOUNTS.json  -- prints the port, then serves until killed.
ACCOUNTS.json: {"audience": "quiver", "clients": {"id": {"secret": "...", "roles": [...]}},
                "users": {"name": {"password": "...", "roles": [...], "groups": [...]}},
                "client_id": "quiver"}
"""

import base64
import json
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


def b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Keys:
    def __init__(self):
        self.generation = 0
        self.rotate()

    def rotate(self):
        self.generation += 1
        self.kid = f"key-{self.generation}"
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self):
        numbers = self.private.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                          "n": b64(numbers.n), "e": b64(numbers.e)}]}


def main():
    accounts = json.load(open(sys.argv[1]))
    keys = Keys()
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = ThreadingHTTPServer(("127.0.0.1", 0), None)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    client_id = accounts.get("client_id", "quiver")

    def token(subject, roles, groups, claims=None, key=None, kid=None):
        now = int(time.time())
        body = {"iss": base, "sub": subject, "preferred_username": subject,
                "aud": accounts.get("audience", "quiver"), "iat": now, "exp": now + 300,
                "resource_access": {client_id: {"roles": roles}}, "groups": groups}
        body.update(claims or {})
        return jwt.encode(body, key or keys.private, algorithm="RS256",
                          headers={"kid": kid or keys.kid})

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/.well-known/openid-configuration":
                self.reply(200, {"issuer": base, "jwks_uri": f"{base}/jwks",
                                 "token_endpoint": f"{base}/token",
                                 "authorization_endpoint": f"{base}/authorize"})
            elif self.path == "/jwks":
                self.reply(200, keys.jwks())
            else:
                self.reply(404, {"error": "not found"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length).decode()
            if self.path == "/token":
                form = dict(urllib.parse.parse_qsl(raw))
                if form.get("grant_type") == "client_credentials":
                    client = accounts["clients"].get(form.get("client_id"))
                    if not client or client["secret"] != form.get("client_secret"):
                        return self.reply(401, {"error": "invalid_client"})
                    access = token(form["client_id"], client.get("roles", []), client.get("groups", []))
                elif form.get("grant_type") == "password":
                    user = accounts["users"].get(form.get("username"))
                    if not user or user["password"] != form.get("password"):
                        return self.reply(401, {"error": "invalid_grant"})
                    access = token(form["username"], user.get("roles", []), user.get("groups", []))
                else:
                    return self.reply(400, {"error": "unsupported_grant_type"})
                self.reply(200, {"access_token": access, "token_type": "Bearer", "expires_in": 300})
            elif self.path == "/mint":
                ask = json.loads(raw)
                self.reply(200, {"token": token(
                    ask.get("sub", "tester"), ask.get("roles", []), ask.get("groups", []),
                    ask.get("claims"), stranger if ask.get("stranger") else None)})
            elif self.path == "/rotate":
                keys.rotate()
                self.reply(200, {"kid": keys.kid})
            else:
                self.reply(404, {"error": "not found"})

    server.RequestHandlerClass = Handler
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
