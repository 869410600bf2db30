"""Where Constant Contact lives: its hosts, the paths on them, and what its tokens are issued
by and for. The sandbox serves the same paths on its own host.

Reference: https://developer.constantcontact.com/api_guide/server_flow.html
"""

from __future__ import annotations

from typing import Final

AUTHORIZE_PATH: Final = "/oauth2/default/v1/authorize"
TOKEN_PATH: Final = "/oauth2/default/v1/token"
API_PATH: Final = "/v3"
#: CC's access tokens are signed by the keys of this authorization server.
JWKS_PATH: Final = "/oauth2/aus1lm3ry9mF7x2Ja0h8/v1/keys"

AUTHORIZE_URL: Final = "https://authz.constantcontact.com" + AUTHORIZE_PATH
TOKEN_URL: Final = "https://authz.constantcontact.com" + TOKEN_PATH
API_BASE_URL: Final = "https://api.cc.email" + API_PATH
JWKS_URL: Final = "https://identity.constantcontact.com" + JWKS_PATH

#: The ``iss`` and ``aud`` every CC access token carries.
JWT_ISSUER: Final = "https://identity.constantcontact.com/oauth2/aus1lm3ry9mF7x2Ja0h8"
JWT_AUDIENCE: Final = API_BASE_URL
