"""Local stand-in for GitHub and for an OpenID Connect provider, used by the OAuth2 e2e tests.

    oauth2_provider.py --cert CERT.pem --key KEY.pem --users USERS.json [--port 0]
                       [--client-id ID --client-secret SECRET] [--github-redirect-uri URI]

The end-to-end tests run without internet, so the gateway's OAuth2 keyboard-interactive login
(GitHub device and authorization-code flows, OIDC device and authorization-code flows) talks to
this server instead. It answers HTTPS on 127.0.0.1 the way the real services do:

- GitHub web flows under /login/... (github.com) and the REST API under /api/... (as a GitHub
  Enterprise `apiurl` of https://127.0.0.1:PORT/api would be);
- an OIDC provider whose issuer is https://127.0.0.1:PORT/oidc (discovery, device authorization,
  token, userinfo, revocation; id tokens are HS256 JWTs keyed with the client secret).

Once listening it prints one line, `listening on PORT`, to stdout. The tests then play "the user
at the browser" through a JSON control API without authentication:

    POST /test/approve  {"user_code": "...", "login": "alice"}   approve a device authorization
    POST /test/deny     {"user_code": "..."}                     deny it
    POST /test/settings {...}  GET /test/settings                 interval, browser user, faults
    GET  /test/log   POST /test/reset-log                         requests seen (not /test/*)
    GET  /test/tokens  GET /test/devices  POST /test/reset        state inspection / full reset

`GET /login/oauth/authorize` and `GET /oidc/authorize` act as a browser whose user is already
signed in and consents: they redirect straight back with a code. Only the standard library is used.
"""
import argparse
import base64
import hashlib
import hmac
import json
import re
import secrets
import signal
import socket
import ssl
import string
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, unquote_plus, urlencode, urlsplit, urlunsplit

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
MAX_BODY = 1 << 20
GITHUB_DEVICE_EXPIRES = 900
OIDC_DEVICE_EXPIRES = 600
CODE_EXPIRES = 600
OIDC_TOKEN_EXPIRES = 3600
POLL_SLACK = 0.8  # a poll sooner than 80% of the interval is "too fast"
USER_CODE_LETTERS = "BCDFGHJKLMNPQRSTVWXZ"
GH_DOCS = "https://docs.github.com/rest"
GH_DEVICE_ERRORS = ("https://docs.github.com/developers/apps/authorizing-oauth-apps"
                    "#error-codes-for-the-device-flow")
GH_ERROR_DESCRIPTIONS = {
    "authorization_pending": "The authorization request is still pending.",
    "slow_down": "Too many requests have been made in the same timeframe.",
    "expired_token": "The device_code has expired.",
    "access_denied": "The authorization request was denied.",
    "incorrect_device_code": "The device_code provided is not valid.",
    "incorrect_client_credentials": "The client_id and/or client_secret passed are incorrect.",
    "bad_verification_code": "The code passed is incorrect or expired.",
    "unsupported_grant_type": "The grant type is not supported.",
    "redirect_uri_mismatch": "The redirect_uri MUST match the registered callback URL for this "
                             "application.",
}
DEFAULT_SETTINGS = {
    "interval": 1,
    "browser_user": None,        # None = first user in USERS.json
    "granted_scope": None,       # overrides the scope of GitHub grants when not None
    "slow_down_increment": 5,    # seconds added to a device code's interval on slow_down
    "device_expires_in": None,   # None = 900 (GitHub) / 600 (OIDC)
    "authorize_deny": False,     # the browser user declines at /authorize
    "strict_accept": False,      # GitHub /login/* answer form-encoded unless Accept has json
    "identity_delay": 0,         # seconds /api/user and /oidc/userinfo wait before answering
}


def log(msg):
    sys.stderr.write(f"[oauth2-provider] {msg}\n")
    sys.stderr.flush()


def short(secret):
    return (secret[:8] + "...") if isinstance(secret, str) else repr(secret)


class BadRequest(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class ClientGone(Exception):
    pass


class Resp:
    def __init__(self, status, body=b"", ctype=None, headers=()):
        self.status = status
        self.body = body
        self.ctype = ctype
        self.headers = list(headers)


def json_resp(status, obj, headers=()):
    return Resp(status, json.dumps(obj).encode(), "application/json; charset=utf-8", headers)


def html_resp(status, title, text):
    esc = lambda s: s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    body = (f"<!DOCTYPE html><html><head><title>{esc(title)}</title></head>"
            f"<body><h1>{esc(title)}</h1><p>{esc(text)}</p></body></html>")
    return Resp(status, body.encode(), "text/html; charset=utf-8")


def redirect(location):
    href = location.replace("&", "&amp;").replace('"', "&quot;")
    body = f'<html><body>You are being <a href="{href}">redirected</a>.</body></html>'
    return Resp(302, body.encode(), "text/html; charset=utf-8", [("Location", location)])


NO_STORE = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]


def with_query(url, **params):
    parts = urlsplit(url)
    extra = urlencode([(k, v) for k, v in params.items() if v is not None])
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def is_abs_http_url(url):
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.fragment


def github_redirect_matches(registered, given):
    """GitHub: same scheme and host, same port unless loopback, path at or under the callback's."""
    try:
        r, g = urlsplit(registered), urlsplit(given)
        if r.scheme != g.scheme or r.hostname != g.hostname:
            return False
        if g.hostname not in ("127.0.0.1", "localhost", "::1") and r.port != g.port:
            return False
    except ValueError:
        return False
    base = r.path.rstrip("/")
    return g.path == r.path or base == "" or g.path.startswith(base + "/")


def split_scopes(value):
    out = []
    for s in re.split(r"[\s,]+", value or ""):
        if s and s not in out:
            out.append(s)
    return out


def norm_user_code(code):
    return re.sub(r"[\s-]", "", code).upper() if isinstance(code, str) else ""


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def first(value):
    """A request parameter as a string (first of repeated ones), or None."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, bool) or value is None:
        return None if value is None else str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return value if isinstance(value, str) else None


class Request:
    def __init__(self, method, path, query, form, headers, body_error=None):
        self.method = method
        self.path = path
        self.query = query
        self.form = form
        self.headers = headers
        self.body_error = body_error

    def q(self, name):
        return first(self.query.get(name))

    def p(self, name):
        return first(self.form.get(name)) if isinstance(self.form, dict) else None


def flat(multi):
    return {k: v[0] if len(v) == 1 else v for k, v in multi.items()}


class Provider:
    def __init__(self, users, client_id, client_secret, github_redirect_uri):
        self.lock = threading.Lock()
        self.users = users
        self.client_id = client_id
        self.client_secret = client_secret
        self.github_redirect_uri = github_redirect_uri
        self.port = None
        self.reset()
        self.routes = [
            ("POST", r"/login/device/code", self.gh_device_code),
            ("POST", r"/login/oauth/access_token", self.gh_access_token),
            ("GET", r"/login/device", self.gh_device_page),
            ("GET", r"/login/oauth/authorize", self.gh_authorize),
            ("GET", r"/api/user", self.gh_user),
            ("GET", r"/api/user/memberships/orgs/([^/]+)", self.gh_membership),
            ("DELETE", r"/api/applications/([^/]+)/token", self.gh_delete_token),
            ("GET", r"/oidc/\.well-known/openid-configuration/?", self.oidc_discovery),
            ("GET", r"/oidc/jwks", self.oidc_jwks),
            ("POST", r"/oidc/device", self.oidc_device),
            ("GET", r"/oidc/device/verify", self.oidc_verify_page),
            ("POST", r"/oidc/token", self.oidc_token),
            ("GET", r"/oidc/authorize", self.oidc_authorize),
            ("GET", r"/oidc/userinfo", self.oidc_userinfo),
            ("POST", r"/oidc/userinfo", self.oidc_userinfo),
            ("POST", r"/oidc/revoke", self.oidc_revoke),
            ("POST", r"/test/approve", self.t_approve),
            ("POST", r"/test/deny", self.t_deny),
            ("GET", r"/test/settings", self.t_get_settings),
            ("POST", r"/test/settings", self.t_settings),
            ("GET", r"/test/log", self.t_log),
            ("POST", r"/test/reset-log", self.t_reset_log),
            ("GET", r"/test/tokens", self.t_tokens),
            ("GET", r"/test/devices", self.t_devices),
            ("POST", r"/test/reset", self.t_reset),
        ]
        self.routes = [(m, re.compile(p + r"\Z"), f) for m, p, f in self.routes]

    def reset(self):
        self.devices = {}      # device_code -> dict
        self.user_codes = {}   # normalized user code -> device_code
        self.codes = {}        # authorization code -> dict
        self.tokens = {}       # access token -> dict
        self.log = []
        self.settings = dict(DEFAULT_SETTINGS)
        self.fail_next = {}    # path -> {"status", "count"}
        self.garbage = {}      # path -> {"status", "body", "content_type"}

    @property
    def base(self):
        return f"https://127.0.0.1:{self.port}"

    @property
    def issuer(self):
        return self.base + "/oidc"

    def browser_user(self):
        return self.settings["browser_user"] or next(iter(self.users))

    # ------------------------------------------------------------------ dispatch

    def dispatch(self, req):
        if not req.path.startswith("/test/"):
            self.log.append({
                "method": req.method, "path": req.path, "query": req.query,
                "form": req.form, "authorization": req.headers.get("Authorization"),
                "headers": dict(req.headers.items()),
            })
            fail = self.fail_next.get(req.path)
            if fail:
                fail["count"] -= 1
                if fail["count"] <= 0:
                    del self.fail_next[req.path]
                log(f"injected failure {fail['status']} for {req.path}")
                return json_resp(fail["status"], {
                    "error": "server_error", "message": "injected failure",
                    "error_description": "injected failure (fail_next)"})
            junk = self.garbage.get(req.path)
            if junk:
                return Resp(junk["status"], junk["body"], junk["content_type"])
        if req.body_error:
            return json_resp(400, {"error": "invalid_request", "error_description": req.body_error})
        allowed = []
        for method, pattern, fn in self.routes:
            m = pattern.match(req.path)
            if m:
                if method == req.method or (method == "GET" and req.method == "HEAD"):
                    return fn(req, *m.groups())
                allowed.append(method)
        if allowed:
            return json_resp(405, {"error": "method_not_allowed", "message": "Method Not Allowed"},
                             [("Allow", ", ".join(sorted(set(allowed))))])
        if req.path.startswith("/api/"):
            return json_resp(404, {"message": "Not Found", "documentation_url": GH_DOCS})
        return json_resp(404, {"error": "not_found", "path": req.path})

    # ------------------------------------------------------------------ shared helpers

    def new_user_code(self):
        while True:
            code = ("".join(secrets.choice(USER_CODE_LETTERS) for _ in range(4)) + "-" +
                    "".join(secrets.choice(string.digits) for _ in range(4)))
            if norm_user_code(code) not in self.user_codes:
                return code

    def new_device(self, kind, client_id, scopes):
        default = GITHUB_DEVICE_EXPIRES if kind == "github" else OIDC_DEVICE_EXPIRES
        expires_in = self.settings["device_expires_in"] or default
        device_code = secrets.token_hex(20) if kind == "github" else secrets.token_urlsafe(32)
        user_code = self.new_user_code()
        d = {"kind": kind, "device_code": device_code, "user_code": user_code,
             "client_id": client_id, "scope": scopes, "expires_in": expires_in,
             "expires_at": time.monotonic() + expires_in, "interval": self.settings["interval"],
             "last_poll": None, "status": "pending", "login": None}
        self.devices[device_code] = d
        self.user_codes[norm_user_code(user_code)] = device_code
        log(f"{kind} device authorization {user_code} scope={' '.join(scopes)!r}")
        return d

    def poll_device(self, d):
        """Returns the RFC 8628 error for a poll, or None when the token may be issued."""
        now = time.monotonic()
        if now >= d["expires_at"] and d["status"] != "used":
            return "expired_token"
        last, d["last_poll"] = d["last_poll"], now
        if d["status"] == "pending":
            if last is not None and now - last < d["interval"] * POLL_SLACK:
                d["interval"] += self.settings["slow_down_increment"]
                return "slow_down"
            return "authorization_pending"
        if d["status"] == "denied":
            return "access_denied"
        return None

    def issue_token(self, kind, login, scopes, client_id):
        if kind == "github":
            alphabet = string.ascii_letters + string.digits
            token = "gho_" + "".join(secrets.choice(alphabet) for _ in range(36))
            expires_at = None
        else:
            token = secrets.token_urlsafe(32)
            expires_at = time.time() + OIDC_TOKEN_EXPIRES
        self.tokens[token] = {"token": token, "kind": kind, "login": login, "scope": scopes,
                              "client_id": client_id, "expires_at": expires_at,
                              "revoked": False}
        log(f"issued {kind} token {short(token)} for {login} scope={' '.join(scopes)!r}")
        return token

    def token_state(self, t):
        if t["revoked"]:
            return "revoked"
        if t["expires_at"] is not None and time.time() >= t["expires_at"]:
            return "expired"
        return "active"

    # ------------------------------------------------------------------ GitHub web flows

    def gh_params(self, req):
        # github.com also takes these parameters in the query string of the POST.
        params = {k: first(v) for k, v in req.query.items()}
        if isinstance(req.form, dict):
            params.update({k: first(v) for k, v in req.form.items()})
        return params

    def gh_answer(self, req, obj):
        accept = (req.headers.get("Accept") or "").lower()
        if self.settings["strict_accept"] and "json" not in accept:
            body = urlencode({k: v for k, v in obj.items()}).encode()
            return Resp(200, body, "application/x-www-form-urlencoded; charset=utf-8")
        return json_resp(200, obj)

    def gh_error(self, req, error, **extra):
        obj = {"error": error, "error_description": GH_ERROR_DESCRIPTIONS.get(error, error),
               "error_uri": GH_DEVICE_ERRORS}
        obj.update(extra)
        return self.gh_answer(req, obj)

    def gh_device_code(self, req):
        p = self.gh_params(req)
        if p.get("client_id") != self.client_id:
            return self.gh_error(req, "incorrect_client_credentials")
        d = self.new_device("github", p["client_id"], split_scopes(p.get("scope")))
        return self.gh_answer(req, {
            "device_code": d["device_code"], "user_code": d["user_code"],
            "verification_uri": self.base + "/login/device",
            "expires_in": d["expires_in"], "interval": d["interval"]})

    def gh_grant(self, req, login, requested, client_id):
        override = self.settings["granted_scope"]
        scopes = split_scopes(override) if override is not None else requested
        token = self.issue_token("github", login, scopes, client_id)
        return self.gh_answer(req, {"access_token": token, "token_type": "bearer",
                                    "scope": ",".join(scopes)})

    def gh_access_token(self, req):
        p = self.gh_params(req)
        if p.get("client_id") != self.client_id:
            return self.gh_error(req, "incorrect_client_credentials")
        grant = p.get("grant_type")
        if grant == DEVICE_GRANT:
            d = self.devices.get(p.get("device_code") or "")
            if (not d or d["kind"] != "github" or d["status"] == "used"
                    or d["client_id"] != p["client_id"]):
                return self.gh_error(req, "incorrect_device_code")
            error = self.poll_device(d)
            if error == "slow_down":
                return self.gh_error(req, error, interval=d["interval"])
            if error:
                return self.gh_error(req, error)
            d["status"] = "used"
            return self.gh_grant(req, d["login"], d["scope"], d["client_id"])
        if "device_code" in p or grant not in (None, "", "authorization_code"):
            return self.gh_error(req, "unsupported_grant_type")
        if p.get("client_secret") != self.client_secret:
            return self.gh_error(req, "incorrect_client_credentials")
        c = self.codes.get(p.get("code") or "")
        if (not c or c["kind"] != "github" or c["client_id"] != p["client_id"]
                or time.monotonic() >= c["expires_at"]):
            return self.gh_error(req, "bad_verification_code")
        if p.get("redirect_uri") and p["redirect_uri"] != c["redirect_uri"]:
            return self.gh_error(req, "redirect_uri_mismatch")
        del self.codes[p["code"]]
        return self.gh_grant(req, c["login"], c["scope"], c["client_id"])

    def gh_device_page(self, req):
        return html_resp(200, "Device Activation",
                         "Enter the code displayed on your device. (Test stand-in: the tests "
                         "approve codes through POST /test/approve.)")

    def gh_authorize(self, req):
        if req.q("client_id") != self.client_id:
            return html_resp(404, "Not Found", "No OAuth application with this client_id.")
        state = req.q("state")
        registered, given = self.github_redirect_uri, req.q("redirect_uri")
        if given:
            if not is_abs_http_url(given):
                return html_resp(400, "Bad redirect_uri", "redirect_uri is not a valid URL.")
            if registered and not github_redirect_matches(registered, given):
                return redirect(with_query(
                    registered, error="redirect_uri_mismatch",
                    error_description=GH_ERROR_DESCRIPTIONS["redirect_uri_mismatch"],
                    error_uri=GH_DEVICE_ERRORS, state=state))
            target = given
        elif registered:
            target = registered
        else:
            return html_resp(400, "Bad request", "No redirect_uri given and no callback URL "
                                                 "registered (--github-redirect-uri).")
        if self.settings["authorize_deny"]:
            return redirect(with_query(
                target, error="access_denied",
                error_description="The user has denied your application access.",
                error_uri=GH_DEVICE_ERRORS, state=state))
        login = req.q("login")
        if login not in self.users:
            login = self.browser_user()
        code = secrets.token_hex(10)
        self.codes[code] = {"kind": "github", "login": login, "client_id": self.client_id,
                            "scope": split_scopes(req.q("scope")), "redirect_uri": target,
                            "expires_at": time.monotonic() + CODE_EXPIRES}
        log(f"github authorize as {login}, code {short(code)}")
        return redirect(with_query(target, code=code, state=state))

    # ------------------------------------------------------------------ GitHub REST API

    def gh_token(self, req):
        """(token dict, None) or (None, 401 response)."""
        header = req.headers.get("Authorization")
        if not header:
            return None, json_resp(401, {"message": "Requires authentication",
                                         "documentation_url": GH_DOCS})
        parts = header.split(None, 1)
        t = None
        if len(parts) == 2 and parts[0].lower() in ("bearer", "token"):
            t = self.tokens.get(parts[1].strip())
        if not t or t["kind"] != "github" or self.token_state(t) != "active":
            return None, json_resp(401, {"message": "Bad credentials",
                                         "documentation_url": GH_DOCS})
        return t, None

    @staticmethod
    def scope_headers(t):
        return [("X-OAuth-Scopes", ", ".join(t["scope"])), ("X-Accepted-OAuth-Scopes", "")]

    def user_id(self, login):
        user = self.users[login]
        return user.get("id", 1000 + list(self.users).index(login))

    def gh_user(self, req):
        t, err = self.gh_token(req)
        if err:
            return err
        login, user = t["login"], self.users[t["login"]]
        url = f"{self.base}/api/users/{login}"
        body = {
            "login": login, "id": self.user_id(login),
            "node_id": user.get("node_id", f"U_{login}"),
            "avatar_url": f"{self.base}/avatars/{login}", "gravatar_id": "", "url": url,
            "html_url": f"{self.base}/{login}", "type": "User", "site_admin": False,
            "name": user.get("name"), "company": user.get("company"),
            "blog": user.get("blog", ""), "location": user.get("location"),
            "email": user.get("email"), "hireable": None, "bio": user.get("bio"),
            "twitter_username": user.get("twitter_username"), "public_repos": 0,
            "public_gists": 0, "followers": 0, "following": 0,
            "created_at": "2020-01-01T00:00:00Z", "updated_at": "2020-01-01T00:00:00Z",
        }
        if "two_factor_authentication" in user and {"user", "read:user"} & set(t["scope"]):
            body["two_factor_authentication"] = bool(user["two_factor_authentication"])
        return json_resp(200, body, self.scope_headers(t))

    def gh_membership(self, req, org):
        t, err = self.gh_token(req)
        if err:
            return err
        org = unquote(org)
        if not {"read:org", "write:org", "admin:org", "org"} & set(t["scope"]):
            return json_resp(403, {
                "message": "You need at least read:org scope to read organization memberships.",
                "documentation_url": GH_DOCS}, self.scope_headers(t))
        login = t["login"]
        orgs = self.users[login].get("orgs") or {}
        match = next((k for k in orgs if k.lower() == org.lower()), None)
        if match is None:
            return json_resp(404, {"message": "Not Found", "documentation_url": GH_DOCS},
                             self.scope_headers(t))
        org_url = f"{self.base}/api/orgs/{quote(match)}"
        return json_resp(200, {
            "url": f"{self.base}/api/orgs/{quote(match)}/memberships/{login}",
            "state": orgs[match], "role": "member", "organization_url": org_url,
            "organization": {"login": match, "url": org_url},
            "user": {"login": login, "id": self.user_id(login)},
        }, self.scope_headers(t))

    def gh_delete_token(self, req, client_id):
        bad = json_resp(401, {"message": "Bad credentials", "documentation_url": GH_DOCS})
        header = req.headers.get("Authorization") or ""
        parts = header.split(None, 1)
        if len(parts) != 2 or parts[0].lower() != "basic":
            return bad
        try:
            cid, _, secret = base64.b64decode(parts[1].strip(), validate=True) \
                .decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return bad
        if cid != self.client_id or secret != self.client_secret:
            return bad
        if unquote(client_id) != self.client_id:
            return json_resp(404, {"message": "Not Found", "documentation_url": GH_DOCS})
        token = req.p("access_token")
        if not token:
            return json_resp(422, {"message": "Invalid request.\n\n\"access_token\" wasn't "
                                              "supplied.", "documentation_url": GH_DOCS})
        t = self.tokens.get(token)
        if not t or t["kind"] != "github" or t["revoked"]:
            return json_resp(404, {"message": "Not Found", "documentation_url": GH_DOCS})
        t["revoked"] = True
        log(f"revoked github token {short(token)}")
        return Resp(204)

    # ------------------------------------------------------------------ OIDC

    def oidc_discovery(self, req):
        i = self.issuer
        return json_resp(200, {
            "issuer": i,
            "authorization_endpoint": i + "/authorize",
            "token_endpoint": i + "/token",
            "userinfo_endpoint": i + "/userinfo",
            "device_authorization_endpoint": i + "/device",
            "revocation_endpoint": i + "/revoke",
            "jwks_uri": i + "/jwks",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", DEVICE_GRANT],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["HS256"],
            "scopes_supported": ["openid", "profile", "email", "groups"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic",
                                                      "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic",
                                                           "client_secret_post", "none"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "name", "email",
                                 "preferred_username", "groups"],
            "code_challenge_methods_supported": ["S256", "plain"],
        })

    def oidc_jwks(self, req):
        return json_resp(200, {"keys": []})

    def oidc_client(self, req, allow_public):
        """RFC 6749 2.3.1 client authentication: (client_id, None) or (None, 401 response)."""
        header = req.headers.get("Authorization") or ""
        parts = header.split(None, 1)
        used_basic = len(parts) == 2 and parts[0].lower() == "basic"

        def fail(desc):
            headers = [("WWW-Authenticate", 'Basic realm="oidc"')] if used_basic else []
            return None, json_resp(401, {"error": "invalid_client", "error_description": desc},
                                   headers + NO_STORE)

        body_id, body_secret = req.p("client_id"), req.p("client_secret")
        if used_basic:
            try:
                raw = base64.b64decode(parts[1].strip(), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return fail("malformed Basic credentials")
            if ":" not in raw:
                return fail("malformed Basic credentials")
            cid, secret = (unquote_plus(x) for x in raw.split(":", 1))
            if body_id is not None and body_id != cid:
                return fail("client_id in body differs from Basic credentials")
            if body_secret is not None and body_secret != secret:
                return fail("client_secret in body differs from Basic credentials")
        elif header:
            return fail("unsupported Authorization scheme")
        else:
            cid, secret = body_id, body_secret
        if cid != self.client_id:
            return fail("unknown client")
        if secret is None:
            if not allow_public:
                return fail("client authentication required")
        elif secret != self.client_secret:
            return fail("client authentication failed")
        return cid, None

    def oidc_error(self, error, desc=None, status=400):
        obj = {"error": error}
        if desc:
            obj["error_description"] = desc
        return json_resp(status, obj, NO_STORE)

    def oidc_device(self, req):
        cid, err = self.oidc_client(req, allow_public=True)
        if err:
            return err
        d = self.new_device("oidc", cid, split_scopes(req.p("scope")))
        verify = self.issuer + "/device/verify"
        return json_resp(200, {
            "device_code": d["device_code"], "user_code": d["user_code"],
            "verification_uri": verify,
            "verification_uri_complete": with_query(verify, user_code=d["user_code"]),
            "expires_in": d["expires_in"], "interval": d["interval"]}, NO_STORE)

    def oidc_verify_page(self, req):
        return html_resp(200, "Device Login", "Enter the code shown on your device. (Test "
                                              "stand-in: approve with POST /test/approve.)")

    def id_token(self, login, client_id, nonce):
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": login, "aud": client_id, "azp": client_id,
                  "iat": now, "auth_time": now, "exp": now + OIDC_TOKEN_EXPIRES}
        claims.update(self.users[login].get("oidc") or {})
        if nonce:
            claims["nonce"] = nonce
        signing = (b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." +
                   b64url(json.dumps(claims).encode()))
        sig = hmac.new(self.client_secret.encode(), signing.encode(), hashlib.sha256).digest()
        return signing + "." + b64url(sig)

    def oidc_grant(self, login, scopes, client_id, nonce=None):
        token = self.issue_token("oidc", login, scopes, client_id)
        body = {"access_token": token, "token_type": "Bearer", "expires_in": OIDC_TOKEN_EXPIRES,
                "scope": " ".join(scopes)}
        if "openid" in scopes:
            body["id_token"] = self.id_token(login, client_id, nonce)
        return json_resp(200, body, NO_STORE)

    def oidc_token(self, req):
        grant = req.p("grant_type")
        if not grant:
            return self.oidc_error("invalid_request", "grant_type is missing")
        if grant == DEVICE_GRANT:
            cid, err = self.oidc_client(req, allow_public=True)
            if err:
                return err
            d = self.devices.get(req.p("device_code") or "")
            if not d or d["kind"] != "oidc" or d["status"] == "used" or d["client_id"] != cid:
                return self.oidc_error("invalid_grant", "unknown or used device_code")
            error = self.poll_device(d)
            if error:
                return self.oidc_error(error)
            d["status"] = "used"
            return self.oidc_grant(d["login"], d["scope"], cid)
        if grant == "authorization_code":
            cid, err = self.oidc_client(req, allow_public=False)
            if err:
                return err
            code = req.p("code") or ""
            c = self.codes.get(code)
            if (not c or c["kind"] != "oidc" or c["client_id"] != cid
                    or time.monotonic() >= c["expires_at"]):
                return self.oidc_error("invalid_grant", "unknown, used or expired code")
            if req.p("redirect_uri") != c["redirect_uri"]:
                return self.oidc_error("invalid_grant", "redirect_uri does not match")
            if c["code_challenge"]:
                verifier = req.p("code_verifier") or ""
                if c["code_challenge_method"] == "S256":
                    verifier = b64url(hashlib.sha256(verifier.encode()).digest())
                if not hmac.compare_digest(verifier, c["code_challenge"]):
                    return self.oidc_error("invalid_grant", "PKCE verification failed")
            del self.codes[code]
            return self.oidc_grant(c["login"], c["scope"], cid, c["nonce"])
        return self.oidc_error("unsupported_grant_type", f"grant_type {grant!r}")

    def oidc_authorize(self, req):
        if req.q("client_id") != self.client_id:
            return html_resp(400, "Bad request", "Unknown client_id.")
        target = req.q("redirect_uri")
        if not target or not is_abs_http_url(target):
            return html_resp(400, "Bad request", "redirect_uri is missing or invalid.")
        state = req.q("state")
        if req.q("response_type") != "code":
            return redirect(with_query(target, error="unsupported_response_type", state=state))
        challenge = req.q("code_challenge")
        method = req.q("code_challenge_method") or "plain"
        if challenge and method not in ("S256", "plain"):
            return redirect(with_query(target, error="invalid_request",
                                       error_description="unsupported code_challenge_method",
                                       state=state))
        if self.settings["authorize_deny"]:
            return redirect(with_query(target, error="access_denied",
                                       error_description="The user denied the request.",
                                       state=state))
        login = req.q("login_hint")
        if login not in self.users:
            login = self.browser_user()
        code = secrets.token_urlsafe(24)
        self.codes[code] = {"kind": "oidc", "login": login, "client_id": self.client_id,
                            "scope": split_scopes(req.q("scope")), "redirect_uri": target,
                            "nonce": req.q("nonce"), "code_challenge": challenge,
                            "code_challenge_method": method,
                            "expires_at": time.monotonic() + CODE_EXPIRES}
        log(f"oidc authorize as {login}, code {short(code)}")
        return redirect(with_query(target, code=code, state=state))

    def oidc_userinfo(self, req):
        header = req.headers.get("Authorization") or ""
        parts = header.split(None, 1)
        if len(parts) != 2 or parts[0].lower() != "bearer":
            return json_resp(401, {"error": "invalid_request"},
                             [("WWW-Authenticate", 'Bearer realm="oidc"')])
        t = self.tokens.get(parts[1].strip())
        if not t or t["kind"] != "oidc" or self.token_state(t) != "active":
            return json_resp(401, {"error": "invalid_token"},
                             [("WWW-Authenticate", 'Bearer realm="oidc", error="invalid_token"')])
        if "openid" not in t["scope"]:
            return json_resp(403, {"error": "insufficient_scope"},
                             [("WWW-Authenticate",
                               'Bearer realm="oidc", error="insufficient_scope", scope="openid"')])
        claims = dict(self.users[t["login"]].get("oidc") or {})
        claims.setdefault("sub", t["login"])
        return json_resp(200, claims)

    def oidc_revoke(self, req):
        cid, err = self.oidc_client(req, allow_public=True)
        if err:
            return err
        token = req.p("token")
        if not token:
            return self.oidc_error("invalid_request", "token is missing")
        t = self.tokens.get(token)
        if t and t["kind"] == "oidc" and t["client_id"] == cid and not t["revoked"]:
            t["revoked"] = True
            log(f"revoked oidc token {short(token)}")
        return Resp(200)

    # ------------------------------------------------------------------ control API

    def t_decide(self, req, approve):
        if not isinstance(req.form, dict):
            return json_resp(400, {"error": "expected a JSON object"})
        device_code = self.user_codes.get(norm_user_code(req.form.get("user_code")))
        if device_code is None:
            return json_resp(404, {"error": "unknown user_code"})
        d = self.devices[device_code]
        login = None
        if approve:
            login = req.form.get("login") or self.browser_user()
            if not isinstance(login, str) or login not in self.users:
                return json_resp(400, {"error": f"unknown login {login!r}"})
        if time.monotonic() >= d["expires_at"]:
            return json_resp(410, {"error": "device authorization expired"})
        if d["status"] != "pending":
            return json_resp(409, {"error": f"device authorization is {d['status']}"})
        d["status"] = "approved" if approve else "denied"
        d["login"] = login
        log(f"{d['kind']} device authorization {d['user_code']} {d['status']} ({login})")
        return json_resp(200, {"ok": True, "kind": d["kind"], "user_code": d["user_code"],
                               "status": d["status"], "login": login})

    def t_approve(self, req):
        return self.t_decide(req, True)

    def t_deny(self, req):
        return self.t_decide(req, False)

    def settings_view(self):
        return {**self.settings, "browser_user": self.browser_user(),
                "fail_next": self.fail_next,
                "garbage": {p: {**g, "body": g["body"].decode("utf-8", "replace")}
                            for p, g in self.garbage.items()}}

    def t_get_settings(self, req):
        return json_resp(200, self.settings_view())

    def t_settings(self, req):
        body = req.form
        if not isinstance(body, dict):
            return json_resp(400, {"error": "expected a JSON object"})
        settings, fail_next, garbage = dict(self.settings), dict(self.fail_next), \
            dict(self.garbage)

        def number(key, value, minimum):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
                raise ValueError(f"{key} must be a number >= {minimum}")
            return value

        def status(value):
            if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
                raise ValueError("status must be an HTTP status code")
            return value

        try:
            for key, value in body.items():
                if key == "interval":
                    settings[key] = number(key, value, 0)
                elif key in ("slow_down_increment", "identity_delay"):
                    settings[key] = number(key, value, 0)
                elif key == "device_expires_in":
                    settings[key] = None if value is None else number(key, value, 1)
                elif key == "browser_user":
                    if value is not None and (not isinstance(value, str)
                                              or value not in self.users):
                        raise ValueError(f"unknown user {value!r}")
                    settings[key] = value
                elif key == "granted_scope":
                    if value is not None and not isinstance(value, str):
                        raise ValueError("granted_scope must be a string or null")
                    settings[key] = value
                elif key in ("authorize_deny", "strict_accept"):
                    if not isinstance(value, bool):
                        raise ValueError(f"{key} must be a boolean")
                    settings[key] = value
                elif key == "fail_next":
                    if value is None:
                        fail_next = {}
                        continue
                    for item in value if isinstance(value, list) else [value]:
                        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
                            raise ValueError("fail_next needs {path, status, count}")
                        count = item.get("count", 1)
                        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                            raise ValueError("count must be an integer >= 0")
                        if count == 0:
                            fail_next.pop(item["path"], None)
                        else:
                            fail_next[item["path"]] = {"status": status(item.get("status", 500)),
                                                       "count": count}
                elif key == "garbage":
                    if value is None:
                        garbage = {}
                        continue
                    for item in value if isinstance(value, list) else [value]:
                        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
                            raise ValueError("garbage needs {path, body, status}")
                        if item.get("body") is None:
                            garbage.pop(item["path"], None)
                            continue
                        if not isinstance(item["body"], str):
                            raise ValueError("garbage body must be a string")
                        ctype = item.get("content_type", "application/json")
                        if not isinstance(ctype, str):
                            raise ValueError("content_type must be a string")
                        garbage[item["path"]] = {"status": status(item.get("status", 200)),
                                                 "body": item["body"].encode(),
                                                 "content_type": ctype}
                else:
                    raise ValueError(f"unknown setting {key!r}")
        except ValueError as e:
            return json_resp(400, {"error": str(e)})
        self.settings, self.fail_next, self.garbage = settings, fail_next, garbage
        log(f"settings changed: {sorted(body)}")
        return json_resp(200, self.settings_view())

    def t_log(self, req):
        return json_resp(200, self.log)

    def t_reset_log(self, req):
        self.log = []
        return json_resp(200, {"ok": True})

    def t_tokens(self, req):
        out = {"active": [], "revoked": [], "expired": []}
        for t in self.tokens.values():
            out[self.token_state(t)].append({k: t[k] for k in
                                             ("token", "kind", "login", "scope", "client_id")})
        return json_resp(200, out)

    def t_devices(self, req):
        now = time.monotonic()
        return json_resp(200, [
            {"kind": d["kind"], "user_code": d["user_code"], "client_id": d["client_id"],
             "scope": d["scope"], "login": d["login"], "interval": d["interval"],
             "status": "expired" if now >= d["expires_at"] and d["status"] != "used"
             else d["status"]}
            for d in self.devices.values()])

    def t_reset(self, req):
        self.reset()
        return json_resp(200, {"ok": True})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "oauth2-provider-standin/1"
    timeout = 600

    def do_GET(self):
        self.handle_any()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def log_request(self, code="-", size="-"):
        # Never the query string: a client may put client_secret there.
        path = urlsplit(getattr(self, "path", "") or "").path
        method = getattr(self, "command", None) or "-"
        log(f"{self.client_address[0]}:{self.client_address[1]} {method} {path} -> {code}")

    def log_message(self, format, *args):
        log(f"{self.client_address[0]}:{self.client_address[1]} {format % args}")

    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            body = bytearray()
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ClientGone()
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise BadRequest(400, "bad chunk size")
                if size == 0:
                    while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                if len(body) + size > MAX_BODY:
                    raise BadRequest(413, "request body too large")
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    raise ClientGone()
                body += chunk
                self.rfile.readline(1024)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            raise BadRequest(400, "bad Content-Length")
        if n > MAX_BODY:
            raise BadRequest(413, "request body too large")
        data = self.rfile.read(n)
        if len(data) < n:
            raise ClientGone()
        return data

    def parse_request_parts(self):
        split = urlsplit(self.path)
        query = flat(parse_qs(split.query, keep_blank_values=True))
        raw = self.read_body()
        form, error = {}, None
        if raw:
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            try:
                text = raw.decode("utf-8")
                if ctype == "application/json" or ctype.endswith("+json"):
                    form = json.loads(text)
                    if not isinstance(form, dict):
                        form, error = None, "JSON body must be an object"
                else:
                    form = flat(parse_qs(text, keep_blank_values=True))
            except (UnicodeDecodeError, ValueError) as e:
                form, error = None, f"unparsable body: {e}"
        return Request(self.command, split.path, query, form, self.headers, error)

    def handle_any(self):
        provider = self.server.provider
        try:
            req = self.parse_request_parts()
        except ClientGone:
            self.close_connection = True
            return
        except BadRequest as e:
            self.close_connection = True
            resp = json_resp(e.status, {"error": "invalid_request", "error_description": str(e)})
        else:
            # A slow identity endpoint (outside the lock: the rest keeps answering).
            with provider.lock:
                delay = provider.settings["identity_delay"]
            if delay and req.path in ("/api/user", "/oidc/userinfo"):
                time.sleep(delay)
            try:
                with provider.lock:
                    resp = provider.dispatch(req)
            except Exception:
                log("internal error:\n" + traceback.format_exc())
                resp = json_resp(500, {"error": "server_error", "message": "internal error"})
        self.send(resp)

    def send(self, resp):
        self.send_response(resp.status)
        if resp.status != 204:
            if resp.ctype:
                self.send_header("Content-Type", resp.ctype)
            self.send_header("Content-Length", str(len(resp.body)))
        for name, value in resp.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and resp.status != 204 and resp.body:
            self.wfile.write(resp.body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, ssl_context, provider):
        self.ssl_context = ssl_context
        self.provider = provider
        super().__init__(address, Handler)

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the connection's own thread, so a stalled client
        # cannot block accept().
        request.settimeout(Handler.timeout)
        try:
            conn = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log(f"{client_address[0]}:{client_address[1]} TLS handshake failed: {e}")
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        except (ConnectionError, ssl.SSLError, socket.timeout):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass


def load_users(path):
    with open(path, encoding="utf-8") as f:
        users = json.load(f)
    if not isinstance(users, dict) or not users:
        raise ValueError("USERS.json must be a non-empty JSON object of users")
    for login, user in users.items():
        if not isinstance(user, dict):
            raise ValueError(f"user {login!r} must be a JSON object")
        if not isinstance(user.get("orgs", {}), dict):
            raise ValueError(f"user {login!r}: orgs must be an object of org -> state")
        if not isinstance(user.get("oidc", {}), dict):
            raise ValueError(f"user {login!r}: oidc must be an object of claims")
    return users


def main():
    ap = argparse.ArgumentParser(description="Local GitHub + OIDC provider stand-in for tests.")
    ap.add_argument("--cert", required=True, help="PEM server certificate (chain)")
    ap.add_argument("--key", required=True, help="PEM private key")
    ap.add_argument("--users", required=True, help="USERS.json")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free)")
    ap.add_argument("--client-id", default="test-client")
    ap.add_argument("--client-secret", default="test-secret")
    ap.add_argument("--github-redirect-uri", default=None,
                    help="the GitHub app's registered callback URL")
    args = ap.parse_args()
    try:
        users = load_users(args.users)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        ctx.set_alpn_protocols(["http/1.1"])
    except (OSError, ValueError, ssl.SSLError) as e:
        print(f"oauth2_provider: {e}", file=sys.stderr)
        return 2
    provider = Provider(users, args.client_id, args.client_secret, args.github_redirect_uri)
    server = Server(("127.0.0.1", args.port), ctx, provider)
    provider.port = server.server_address[1]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening on {provider.port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
