"""An independent OpenID Connect relying party for kitsync's Kit login bridge.

Authlib plays the app: discovery, the authorization request with PKCE (S256) and a nonce,
the code exchange, and the OpenID Connect checks of the ID token (signature against the
JWKS, iss, aud, exp, iat, nonce). `requests` plays the browser: it follows kitsync's redirect
to the tenant's auth centre (`kitsync emulate auth-centre`), posts its login form, and brings
the answer back to kitsync, which redirects to the app's redirect_uri (not followed).

It also checks, as a relying party would notice them: an ID token with another nonce is
refused by the validation, a wrong PKCE verifier is refused by kitsync (invalid_grant), and a
reused code is refused (invalid_grant).

Prints one JSON object on stdout; exits non-zero on any failure.
"""
import argparse
import html.parser
import json
import sys
import urllib.parse
import warnings

warnings.simplefilter("ignore")  # Authlib announces its move to joserfc

import requests  # noqa: E402
from authlib.common.security import generate_token  # noqa: E402
from authlib.integrations.requests_client import OAuth2Session  # noqa: E402
from authlib.integrations.base_client.errors import OAuthError  # noqa: E402
from authlib.jose import JsonWebKey, jwt  # noqa: E402
from authlib.jose.errors import JoseError  # noqa: E402
from authlib.oidc.core import CodeIDToken  # noqa: E402
from joserfc.errors import JoseError as RfcJoseError  # noqa: E402

# Authlib 1.9's jose layer raises joserfc's errors for some claims, its own for others.
CLAIM_ERRORS = (JoseError, RfcJoseError)


class Form(html.parser.HTMLParser):
    """The first form of a page: its action and its inputs' values."""

    def __init__(self):
        super().__init__()
        self.action = None
        self.fields = {}
        self.done = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if self.done:
            return
        if tag == "form" and self.action is None:
            self.action = a.get("action", "")
        elif tag == "input" and self.action is not None and a.get("type") == "hidden":
            self.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag):
        if tag == "form" and self.action is not None:
            self.done = True


def fail(step, why):
    print(json.dumps({"ok": False, "step": step, "error": why}))
    sys.exit(1)


def browser_login(auth_url, user):
    """Follows kitsync's authorize to the auth centre, logs in, returns to kitsync, and
    returns where kitsync finally sends the browser (the app's redirect_uri with a code)."""
    browser = requests.Session()
    r = browser.get(auth_url, allow_redirects=False, timeout=30)
    if r.status_code != 302:
        fail("authorize", f"HTTP {r.status_code}: {r.text[:300]}")
    at_kit = r.headers["Location"]
    r = browser.get(at_kit, allow_redirects=False, timeout=30)
    if r.status_code != 200:
        fail("kit login form", f"HTTP {r.status_code}: {r.text[:300]}")
    form = Form()
    form.feed(r.text)
    if form.action is None:
        fail("kit login form", "no form on the page")
    data = dict(form.fields, user_name=user)
    r = browser.post(urllib.parse.urljoin(at_kit, form.action), data=data, allow_redirects=False, timeout=30)
    if r.status_code != 302:
        fail("kit login", f"HTTP {r.status_code}: {r.text[:300]}")
    callback = r.headers["Location"]
    r = browser.get(callback, allow_redirects=False, timeout=30)  # the cookie goes along
    if r.status_code != 302:
        fail("kit callback", f"HTTP {r.status_code}: {r.text[:300]}")
    return r.headers["Location"]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--issuer", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--client-secret", required=True)
    p.add_argument("--redirect-uri", required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--user", required=True)
    args = p.parse_args()

    disc = requests.get(args.issuer + "/.well-known/openid-configuration", timeout=30).json()
    if disc["issuer"] != args.issuer:
        fail("discovery", f"issuer {disc['issuer']!r} != {args.issuer!r}")
    jwks = JsonWebKey.import_key_set(requests.get(disc["jwks_uri"], timeout=30).json())

    def session():
        return OAuth2Session(
            args.client_id,
            args.client_secret,
            scope="openid profile email",
            redirect_uri=args.redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic",
        )

    # 1. The login, as an app with Authlib does it.
    app = session()
    verifier = generate_token(48)
    nonce = generate_token(20)
    uri, state = app.create_authorization_url(
        disc["authorization_endpoint"], code_verifier=verifier, nonce=nonce, login_hint=args.tenant
    )
    back = browser_login(uri, args.user)
    if not back.startswith(args.redirect_uri):
        fail("redirect", f"kitsync sent the browser to {back}")
    try:
        token = app.fetch_token(
            disc["token_endpoint"], authorization_response=back, state=state, code_verifier=verifier
        )
    except OAuthError as e:
        fail("token", str(e))
    claims_options = {"iss": {"essential": True, "value": args.issuer}}
    claims = jwt.decode(
        token["id_token"],
        jwks,
        claims_cls=CodeIDToken,
        claims_options=claims_options,
        claims_params={"nonce": nonce, "client_id": args.client_id},
    )
    try:
        claims.validate(leeway=5)
    except CLAIM_ERRORS as e:
        fail("id_token", str(e))
    userinfo = app.get(disc["userinfo_endpoint"], timeout=30).json()
    if userinfo.get("sub") != claims["sub"]:
        fail("userinfo", f"sub {userinfo.get('sub')!r} != {claims['sub']!r}")

    # 2. The relying party's own check refuses an ID token meant for another login.
    other = jwt.decode(
        token["id_token"],
        jwks,
        claims_cls=CodeIDToken,
        claims_options=claims_options,
        claims_params={"nonce": "another-nonce", "client_id": args.client_id},
    )
    try:
        other.validate(leeway=5)
        fail("nonce", "an ID token with another nonce was accepted")
    except CLAIM_ERRORS:
        pass

    # 3. A wrong PKCE verifier is refused by kitsync, and the same code again too.
    app2 = session()
    verifier2 = generate_token(48)
    uri2, state2 = app2.create_authorization_url(
        disc["authorization_endpoint"], code_verifier=verifier2, nonce=generate_token(20), login_hint=args.tenant
    )
    back2 = browser_login(uri2, args.user)
    wrong_pkce = None
    try:
        app2.fetch_token(
            disc["token_endpoint"], authorization_response=back2, state=state2, code_verifier=generate_token(48)
        )
    except OAuthError as e:
        wrong_pkce = e.error
    if wrong_pkce != "invalid_grant":
        fail("pkce", f"a wrong code_verifier got {wrong_pkce!r}, not invalid_grant")
    reused = None
    try:
        session().fetch_token(disc["token_endpoint"], authorization_response=back, state=state, code_verifier=verifier)
    except OAuthError as e:
        reused = e.error
    if reused != "invalid_grant":
        fail("reuse", f"a reused code got {reused!r}, not invalid_grant")

    print(
        json.dumps(
            {
                "ok": True,
                "sub": claims["sub"],
                "tenant_id": claims.get("tenant_id"),
                "aud": claims["aud"],
                "alg": jwt_header_alg(token["id_token"]),
                "userinfo_sub": userinfo["sub"],
                "wrong_nonce": "refused",
                "wrong_pkce": wrong_pkce,
                "reused_code": reused,
            }
        )
    )


def jwt_header_alg(compact):
    import base64

    head = compact.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["alg"]


if __name__ == "__main__":
    main()
